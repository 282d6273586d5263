"""How each kernel family is built on a target (schedule variant, rule knobs, builder knobs),
and the per-target file in which `explore` records what it measured best on this machine, for
`compile` / `load` to build with. Compiler-free: the runtime-only path reads manifests that
name choices.

File: `<cache>/choices/<target key>.json`, e.g. `choices/cpu-znver4.json`, `cuda-sm_90.json`:
{"target": ..., "machine": {...}, "created": ..., "families": {family: {"variant": ...,
"rule_knobs": {...}, "builder_knobs": {...}, "speedup": ..., "cases": [...]}}}.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import HymbaError

LIBRARY = "library"  # the pseudo-variant that calls a vendor BLAS (hymba_compile/library.py)
TUNED = "tuned"  # the pseudo-variant applying the target's MetaSchedule database (`tune`)


@dataclass(frozen=True)
class Choice:
    """How one kernel family is built: schedule variant (None: the target's default), the
    rule's knobs and the ir/ builder's knobs (keyword -> value)."""

    variant: str | None = None
    rule_knobs: tuple = ()  # ((knob, value), ...), sorted
    builder_knobs: tuple = ()

    @staticmethod
    def of(variant: str | None = None, rule_knobs: dict | None = None,
           builder_knobs: dict | None = None) -> "Choice":
        return Choice(variant, tuple(sorted((rule_knobs or {}).items())),
                      tuple(sorted((builder_knobs or {}).items())))

    @staticmethod
    def coerce(value: "Choice | str | None") -> "Choice":
        """A Choice from a Choice, a bare variant name or None (the default)."""
        return value if isinstance(value, Choice) else Choice(value)

    def label(self) -> str:
        """e.g. "tiles mr=4 nr=2", "default block_q=32"."""
        knobs = " ".join(f"{k}={v}" for k, v in (*self.builder_knobs, *self.rule_knobs))
        return " ".join(x for x in (self.variant or "default", knobs) if x)

    def to_json(self) -> dict:
        return {"variant": self.variant, "rule_knobs": dict(self.rule_knobs),
                "builder_knobs": dict(self.builder_knobs)}

    @staticmethod
    def from_json(d: dict) -> "Choice":
        return Choice.of(d.get("variant"), d.get("rule_knobs"), d.get("builder_knobs"))


def choices_key(choices: dict) -> list:
    """A JSON-able, order-independent form of {family: Choice | variant name} (for cache keys
    and manifests)."""
    return sorted((family, Choice.coerce(c).to_json()) for family, c in (choices or {}).items()
                  if Choice.coerce(c) != Choice())


def target_key(target_name: str, mcpu: str | None = None) -> str:
    """A file-name form of a project target: "cpu" -> "cpu-<mcpu>", "cuda:sm_90" -> "cuda-sm_90"."""
    if target_name == "cpu" and mcpu:
        target_name = f"cpu:{mcpu}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", target_name)


def choices_path(cache_root: Path, target_name: str, mcpu: str | None = None) -> Path:
    return Path(cache_root) / "choices" / f"{target_key(target_name, mcpu)}.json"


def tuned_dir(cache_root: Path, target_name: str, mcpu: str | None = None) -> Path:
    """The folder of the target's MetaSchedule database under a cache root (`tune`'s default)."""
    return Path(cache_root) / "tuned" / target_key(target_name, mcpu)


def read_choices(path: Path) -> dict[str, Choice]:
    """{family: Choice} from a choices file ({} when there is none); a corrupt file is one
    error naming it."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {family: Choice.from_json(d) for family, d in data["families"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise HymbaError(f"the per-target choices file {path} is unreadable ({e}); delete it or "
                         f"rerun `python -m hymba_compile explore`") from None


def write_choices(path: Path, record: dict) -> None:
    """Write a choices record atomically (never half-written)."""
    from .fileio import atomic_write_text

    os.makedirs(Path(path).parent, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
