"""The builders' knobs per target: tile sizes, key/query blocks, decode splits, scan tile, chunk
and algorithm. One place, so that the program, the tests and the benches build a kernel for a
target the way that target's schedules expect (builder defaults are the CPU's).

CPU: the builders' defaults (measured on the CPU: ir/ docstrings). CUDA:
- attention_prefill: the "compact" key walk (no branch around the shared tiles; the G = 5 query
  heads of a kv head in one thread block), 16 queries x 16 keys per step: the tiles of one step
  (q^T for 80 rows, k, v, the scores) are 37 KiB of shared memory at head dims 64/128, under the
  48 KiB static limit;
- attention_decode: 16 key splits (batch 1 has KV x 16 = 80 blocks at Hymba size), 32-key blocks,
  scores, running max and sum reduced in registers (no shared-memory accumulation);
- scans: channel tiles of at most 32 (one warp per block: 100 blocks per row at d_inner 3200), the
  chunked algorithm for prefill (64-step chunks: L/64 times more blocks than the sequential scan).
"""

from __future__ import annotations

import inspect

import tvm

from .target import target_kind

# Which family each builder of ir/ makes (tests check this against the PrimFuncs' attribute).
BUILDER_FAMILY = {
    "rope_qkv": "rope",
    "attention_prefill": "attention_prefill",
    "attention_decode_sliding": "attention_decode",
    "attention_decode_global": "attention_decode",
    "kv_cache_write_sliding": "kv_cache_write",
    "kv_cache_write_global": "kv_cache_write",
    "kv_cache_fill_sliding": "kv_cache_fill",
    "kv_cache_fill_global": "kv_cache_fill",
    "selective_scan": "selective_scan",
    "selective_scan_chunked": "selective_scan_chunked",
    "selective_state_update": "selective_state_update",
}

_CUDA = {
    "attention_prefill": {"block_q": 16, "block_k": 16, "key_walk": "compact"},
    "attention_decode": {"splits": 16, "block_k": 32, "reduce_in": "registers"},
    "selective_scan": {"max_tile": 32},
    "selective_scan_chunked": {"max_tile": 32, "chunk": 64},
    "selective_state_update": {"max_tile": 32},
}


# The builders' knobs worth exploring per target kind (family -> knob -> values; the kind's
# default is among them). `python -m hymba_compile explore` walks these with the rules' grids.
_GRID = {
    "cpu": {
        "attention_prefill": {"block_q": (32, 64, 128), "block_k": (32, 64, 128)},
        "attention_decode": {"splits": (2, 4, 8), "block_k": (32, 64)},
        "selective_scan": {"max_tile": (32, 64, 128)},
        "selective_scan_chunked": {"chunk": (32, 64, 128)},
        "selective_state_update": {"max_tile": (32, 64, 128)},
    },
    "cuda": {
        "attention_prefill": {"block_q": (16, 32), "block_k": (16, 32)},
        "attention_decode": {"splits": (8, 16, 32), "block_k": (32, 64)},
        "selective_scan": {"max_tile": (32, 64)},
        "selective_scan_chunked": {"chunk": (32, 64, 128)},
        "selective_state_update": {"max_tile": (32, 64)},
    },
}


def builder_grid(family: str, target: tvm.target.Target) -> dict[str, tuple]:
    """The builder knobs of `family` worth exploring on `target` (knob -> values)."""
    return dict(_GRID[target_kind(target)].get(family, {}))


def kernel_options(family: str, target: tvm.target.Target) -> dict:
    """Keyword arguments for the builders of `family` on `target` ({} = builder defaults)."""
    if target_kind(target) == "cuda":
        return dict(_CUDA.get(family, {}))
    return {}


def scan_algorithm(target: tvm.target.Target) -> str:
    """The prefill scan for `target`: "sequential" (CPU: channel tiles give the cores enough
    work) or "chunked" (GPU: parallel over chunks too)."""
    return "chunked" if target_kind(target) == "cuda" else "sequential"


def builder_options(builder, target: tvm.target.Target, args: tuple = ()) -> dict:
    """`kernel_options` for the family of an ir/ builder function, limited to the keywords the
    builder takes and does not already get positionally in `args`."""
    family = BUILDER_FAMILY.get(builder.__name__)
    if family is None:
        return {}
    params = list(inspect.signature(builder).parameters)
    given = set(params[:len(args)])
    return {k: v for k, v in kernel_options(family, target).items()
            if k in params and k not in given}


def build_for(builder, args: tuple, target: tvm.target.Target, **kwargs):
    """builder(*args, **kwargs) with the target's knobs: the PrimFunc that `target`'s schedules
    expect (explicit arguments win)."""
    options = {k: v for k, v in builder_options(builder, target, args).items() if k not in kwargs}
    return builder(*args, **kwargs, **options)
