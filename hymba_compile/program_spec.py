"""What a compiled program is specialised to, and the cache layout both the program and the
runtime derive from it. Imports no compiler module: the runtime-only load path uses it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .config import GLOBAL, HymbaConfig

MAX_DECODE_BATCH = 16  # ir/linear.py's limit too (ir/ imports nothing from here)

# Whole-program fusion variants: name -> (default, the other values). `explore --scope model`
# builds each; the runtime is the same for all (same functions and arguments).
FUSIONS = {
    "combine": ("fused", ("unfused",)),  # decode: norm-average + out_proj in one kernel, or two
    "gate_up": ("fused", ("unfused",)),  # gate and up GEMV/GEMM + SiLU*mul in one kernel, or three
    "scan": ("target", ("sequential", "chunked")),  # prefill scan: the target's, or forced
    "rope_cache": ("separate", ("fused",)),  # decode: RoPE then the cache write, or one kernel
}


@dataclass(frozen=True)
class ProgramSpec:
    """What one compiled program is specialised to."""

    config: HymbaConfig
    weight_dtype: str  # "float32" | "bfloat16"
    decode_batches: tuple[int, ...] = (1, 2, 4, 8)
    fusions: tuple = ()  # ((name, value), ...) of FUSIONS that differ from the default
    # batch sizes with a batched prefill function (`prefill_b{B}`, CPU programs); opt-in: each
    # adds B copies of the per-row attention/conv/scan calls, and compiling them costs minutes
    # (tiny preset: 17 s without, 208 s with 2, 4 and 8)
    prefill_batches: tuple = ()

    def __post_init__(self) -> None:
        for name, value in self.fusions:
            if name not in FUSIONS or value not in (FUSIONS[name][0], *FUSIONS[name][1]):
                raise ValueError(f"unknown fusion variant {name}={value}; known: " + ", ".join(
                    f"{n}={'|'.join((d, *o))}" for n, (d, o) in FUSIONS.items()))
        object.__setattr__(self, "fusions", tuple(sorted(
            (n, v) for n, v in self.fusions if v != FUSIONS[n][0])))
        c = self.config
        if c.num_memory_tokens < 1:
            raise ValueError("the compiled backend needs at least one meta token "
                             "(num_memory_tokens >= 1), as every Hymba checkpoint has")
        if not c.rope:
            raise ValueError("the compiled backend implements rope=true only (official Hymba)")
        if self.weight_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"weight dtype {self.weight_dtype!r}: use float32 or bfloat16")
        if any(not 2 <= b <= MAX_DECODE_BATCH for b in self.prefill_batches):
            raise ValueError(f"batched prefill sizes must be in 2..{MAX_DECODE_BATCH}, got "
                             f"{list(self.prefill_batches)}")
        object.__setattr__(self, "prefill_batches", tuple(sorted(set(self.prefill_batches))))
        if not self.decode_batches or any(not 1 <= b <= MAX_DECODE_BATCH
                                          for b in self.decode_batches):
            raise ValueError(f"decode batch sizes must be in 1..{MAX_DECODE_BATCH}, got "
                             f"{list(self.decode_batches)}")

    @property
    def cache_dtype(self) -> str:
        return self.weight_dtype

    def fusion(self, name: str) -> str:
        """The value of fusion variant `name` in this program."""
        return dict(self.fusions).get(name, FUSIONS[name][0])

    def digest(self) -> str:
        """sha256 of what the program is specialised to (config, weight dtype, decode batches)."""
        parts = {"config": self.config.to_dict(), "weight_dtype": self.weight_dtype,
                 "decode_batches": list(self.decode_batches)}
        if self.fusions:  # (absent for the default program: its digest is unchanged)
            parts["fusions"] = [list(f) for f in self.fusions]
        if self.prefill_batches:
            parts["prefill_batches"] = list(self.prefill_batches)
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
