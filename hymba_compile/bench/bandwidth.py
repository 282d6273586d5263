"""The machine's read bandwidth, measured honestly: the best of several streaming readers over
buffers far larger than the last-level cache, so that no reader (ours included) can beat it by
reading from cache.

Readers (each over its own `gib` GiB fp32 buffer, using every thread its library uses):
* `torch.mv`: a matrix-vector product over a square matrix (what the bound used to be);
* `torch.sum`: torch's multi-threaded reduction over a flat vector;
* `tvm_read`, `tvm_read_bf16`: our own read kernel, y[j] = sum_k f32(a[j, k]) over fp32 and
  over bf16 data (the decode weights' dtype), scheduled as the decode GEMV is (rows in
  parallel, fp32 partial sums per row in a vector register), so that the bound is at least
  what our kernels' access pattern achieves from DRAM.
Each reader's figure is the best of `repeat` runs (GB/s, 1e9 bytes); the bound is the best
reader.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

DEFAULT_LLC_BYTES = 256 * 2**20  # when sysfs says nothing: larger than any CPU's L3 today


def last_level_cache_bytes() -> int:
    """Total bytes of the largest cache level over all its instances (every L3 slice of every
    CCX / socket), from Linux sysfs; DEFAULT_LLC_BYTES where that is not readable."""
    seen: dict[tuple[int, str], int] = {}
    root = Path("/sys/devices/system/cpu")
    for index in root.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            shared = (index / "shared_cpu_list").read_text().strip()
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        num = int(size.rstrip("KMG")) * units.get(size[-1], 1)
        seen[(level, shared)] = num
    if not seen:
        return DEFAULT_LLC_BYTES
    top = max(level for level, _ in seen)
    return sum(size for (level, _), size in seen.items() if level == top)


def _best_seconds(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _tvm_read_kernel(rows: int, cols: int, dtype: str):
    """y[0, j] = sum_k f32(a[j, k]) over a [rows, cols] buffer of `dtype`, compiled for this CPU."""
    import tvm  # noqa: PLC0415 - only when measured
    from tvm import te

    from ..ir.common import f32, finish
    from ..schedules.cpu.tiles import gemv_block
    from ..schedules.target import named_target

    a = te.placeholder((rows, cols), dtype, name="a")
    k = te.reduce_axis((0, cols), name="k")
    y = te.compute((1, rows), lambda b, j: te.sum(f32(a[j, k]), axis=k), name="y")
    func = finish(te.create_prim_func([a, y]), "read", f"read_{rows}x{cols}_{dtype}")
    sch = tvm.s_tir.Schedule(func)
    gemv_block(sch, sch.get_sblock("y"), 1, cols, rows, lanes=32, rows=1)
    return tvm.compile(sch.mod, target=named_target("cpu")).mod["main"]


def read_bandwidths(gib: float = 1.0, repeat: int = 9) -> dict[str, float]:
    """GB/s of each reader over `gib` GiB (at least 4x the last-level cache), best of `repeat`."""
    nbytes = max(int(gib * 2**30), 4 * last_level_cache_bytes())
    n = int((nbytes / 4) ** 0.5)
    out: dict[str, float] = {}
    a = torch.empty(n, n).uniform_()
    x = torch.ones(n)
    out["torch.mv"] = a.numel() * 4 / _best_seconds(lambda: torch.mv(a, x), repeat) / 1e9
    flat = a.view(-1)
    out["torch.sum"] = a.numel() * 4 / _best_seconds(lambda: flat.sum(), repeat) / 1e9
    cols = 4096
    for name, dtype in (("tvm_read", torch.float32), ("tvm_read_bf16", torch.bfloat16)):
        size = torch.finfo(dtype).bits // 8
        rows = nbytes // size // cols
        matrix = flat.view(dtype)[: rows * cols].view(rows, cols)
        y = torch.empty(1, rows)
        read = _tvm_read_kernel(rows, cols, str(dtype).removeprefix("torch."))
        out[name] = rows * cols * size / _best_seconds(lambda: read(matrix, y), repeat) / 1e9
    return {name: round(v, 2) for name, v in out.items()}


def peak_read_gbps(gib: float = 1.0, repeat: int = 9) -> tuple[float, dict[str, float]]:
    """(the bound: the best reader's GB/s, every reader's GB/s)."""
    readers = read_bandwidths(gib, repeat)
    return max(readers.values()), readers


def threads_line() -> str:
    """The thread counts the timed code runs with (TVM's pool, torch's intra-op pool, cores)."""
    import os  # noqa: PLC0415

    from .. import available_cores

    return (f"threads: TVM {os.environ.get('TVM_NUM_THREADS', '?')}, "
            f"torch {torch.get_num_threads()}, cores available {available_cores()}")
