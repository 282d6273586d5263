"""What a compiled program is specialised to, and the cache layout both the program and the
runtime derive from it. Imports no compiler module: the runtime-only load path uses it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .config import GLOBAL, HymbaConfig

MAX_DECODE_BATCH = 16  # ir/linear.py's limit too (ir/ imports nothing from here)


@dataclass(frozen=True)
class ProgramSpec:
    """What one compiled program is specialised to."""

    config: HymbaConfig
    weight_dtype: str  # "float32" | "bfloat16"
    decode_batches: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self) -> None:
        c = self.config
        if c.num_memory_tokens < 1:
            raise ValueError("the compiled backend needs at least one meta token "
                             "(num_memory_tokens >= 1), as every Hymba checkpoint has")
        if not c.rope:
            raise ValueError("the compiled backend implements rope=true only (official Hymba)")
        if self.weight_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"weight dtype {self.weight_dtype!r}: use float32 or bfloat16")
        if not self.decode_batches or any(not 1 <= b <= MAX_DECODE_BATCH
                                          for b in self.decode_batches):
            raise ValueError(f"decode batch sizes must be in 1..{MAX_DECODE_BATCH}, got "
                             f"{list(self.decode_batches)}")

    @property
    def cache_dtype(self) -> str:
        return self.weight_dtype

    def digest(self) -> str:
        """sha256 of what the program is specialised to (config, weight dtype, decode batches)."""
        parts = {"config": self.config.to_dict(), "weight_dtype": self.weight_dtype,
                 "decode_batches": list(self.decode_batches)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def owner_layers(c: HymbaConfig) -> list:
    """The layers that own K/V (consumers read their producer's), in order."""
    return [p for p in c.layer_plan() if p.owns_kv]


def cache_shapes(c: HymbaConfig, batch, cap) -> list[tuple]:
    """Shapes of the k and v caches of every owner layer, in owner order: the ring
    [batch, KV, M + W, d] for sliding-window layers, [batch, KV, cap, d] for global ones.
    The program's cache arguments and the runtime's allocations both come from here."""
    shapes = []
    for p in owner_layers(c):
        slots = cap if p.attention == GLOBAL else c.num_memory_tokens + c.sliding_window
        shapes += [(batch, c.num_key_value_heads, slots, c.qk_head_dim),
                   (batch, c.num_key_value_heads, slots, c.v_dim)]
    return shapes
