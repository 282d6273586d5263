"""HOW each kernel of `ir/` runs fast on a target: named targets, dlight-style rules
(`apply(func, target) -> Schedule | None`) and the registry that picks one per kernel family."""

from .registry import apply_schedule, variants
from .target import named_target

__all__ = ["apply_schedule", "variants", "named_target"]
