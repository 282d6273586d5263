"""`python -m hymba_compile bench kernels`: every kernel at Hymba-1.5B dimensions against its
eager PyTorch baseline, in the same run.

A case module in `hymba_compile/bench/kernel_cases/` defines `cases() -> list[KernelCase]`. Each
case also names the PrimFuncs it runs (`kernels`: builder and arguments, plus a small static
size for numerical checks) and its work per call (`bytes_moved`, `flops`), which
`bench kernels --target cuda:sm_XX --dry` (bench/cuda_kernels.py) reports without a GPU and a
GPU run turns into GB/s and TFLOP/s.

Conventions for the work per call, computed from the case's shapes and dtypes:
- bytes_moved: every input read once plus every output written once, at its dtype (a buffer
  updated in place counts twice; a cache or table counts only the rows the call touches; a case
  of two kernels counts the intermediate written and read back);
- flops: multiply-adds count 2; the other arithmetic of norms, activations and recurrences is
  counted per element and operation as written in ir/ (exp, rsqrt, division count 1 each);
  attention counts its two matmuls over the visible (query, key) pairs only, as FlashAttention
  reports it (2 * pairs * (dq + dv) * heads).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Callable

import torch

from .bandwidth import last_level_cache_bytes, peak_read_gbps, threads_line
from .timing import median_ms

MAX_COPIES = 4096  # set-ups of one memory-bound case rotated through (see `rotating`)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # names used by ir/ -> torch
CASE_MODULES = ("norm", "linear", "conv", "scan", "attention", "combine", "embed")


@dataclass
class Prepared:
    """Both sides of one benchmark, ready to run: each callable runs once and returns its output."""

    ours: Callable[[], torch.Tensor]
    baseline: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class KernelCall:
    """One PrimFunc a case runs: builder(*args, **kwargs) at Hymba-1.5B size (built with a
    target's knobs by `schedules.options.build_for`; explicit kwargs win). For numerical checks
    the same builder runs at `small_args` (None: `args`) with the symbolic dims set by `dims`
    (var name -> size; others 3) and inputs drawn uniformly from `ranges` (param name ->
    (low, high); floats default to a standard normal, ints to 0)."""

    builder: Callable
    args: tuple
    kwargs: dict = field(default_factory=dict)
    small_args: tuple | None = None
    dims: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)


@dataclass
class KernelCase:
    name: str  # component and phase, e.g. "scan_prefill"
    shape: str  # human-readable sizes and dtypes
    baseline: str  # what the baseline is, e.g. "torch.matmul"
    setup: Callable[[], Prepared]
    memory_bound: bool = False
    target: dict = field(default_factory=dict)  # the goal, e.g. {"ratio": 20}
    kernels: tuple[KernelCall, ...] = ()  # what `ours` runs, in order
    bytes_moved: Callable[[], int] | None = None  # per call (module docstring)
    flops: Callable[[], int] | None = None  # per call (module docstring)
    variant: str | None = None  # the CPU schedule variant `ours` uses (None: default)


def itemsize(dtype: str) -> int:
    """Bytes per element of an ir/ dtype name."""
    return {"float32": 4, "bfloat16": 2, "float16": 2, "int32": 4, "int64": 8}[dtype]


def nbytes(dtype: str, *counts: int) -> int:
    """Bytes of `sum(counts)` elements of `dtype`."""
    return sum(counts) * itemsize(dtype)


def all_cases() -> list[KernelCase]:
    cases = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(f"hymba_compile.bench.kernel_cases.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"hymba_compile.bench.kernel_cases.{name}":
                raise
            continue
        cases.extend(module.cases())
    return cases


def copies_needed(case: KernelCase, cache_bytes: int) -> int:
    """How many independent set-ups of a memory-bound case make its data (bytes_moved per call,
    each copy) at least 4x `cache_bytes` (at least 2 copies), so that calls rotating through
    them read from DRAM as the model's do: with one 3x-cache weight read again and again, a
    non-LRU L3 kept part of it and a GEMV ran at 107% of the streaming bound. 1 for
    compute-bound cases."""
    if not case.memory_bound or case.bytes_moved is None:
        return 1
    return max(2, min(MAX_COPIES, -(-4 * cache_bytes // max(1, case.bytes_moved()))))


MEMORY_BUDGET = 4 * 2**30  # bytes all copies of one case may hold (and 1/4 of what is free)


def rotating(case: KernelCase, copies: int) -> tuple[Prepared, Prepared, int]:
    """(the first set-up, one whose sides each call the next of up to `copies` set-ups in
    turn, the number of copies made). Every set-up has its own tensors; kernels are compiled once (`reusing_kernels`).
    The copies are capped by memory: a set-up may hold far more than a call reads (the
    embedding's whole 102 MB table for one row), measured as the process's RSS growth."""
    import psutil  # noqa: PLC0415

    from ..build import reusing_kernels  # noqa: PLC0415

    proc = psutil.Process()
    with reusing_kernels():
        before = proc.memory_info().rss
        preps = [case.setup()]
        held = max(1, proc.memory_info().rss - before)
        budget = min(MEMORY_BUDGET, psutil.virtual_memory().available // 4)
        copies = max(1, min(copies, budget // held))
        preps += [case.setup() for _ in range(copies - 1)]
    if copies == 1:
        return preps[0], preps[0], 1
    turn = {"ours": 0, "baseline": 0}

    def side(name: str):
        def call():
            i = turn[name] = (turn[name] + 1) % copies
            return getattr(preps[i], name)()
        return call

    return preps[0], Prepared(ours=side("ours"), baseline=side("baseline")), copies


def run_case(case: KernelCase, peak_gbps: float, repeat: int,
             cache_bytes: int | None = None) -> dict:
    """Time both sides of `case` (medians of `repeat` batches); memory-bound cases rotate
    through copies of their data larger than the last-level cache (`cache_bytes`)."""
    copies = copies_needed(case, last_level_cache_bytes() if cache_bytes is None else cache_bytes)
    first, timed, copies_used = rotating(case, copies)
    with torch.inference_mode():
        err = (first.ours().float() - first.baseline().float()).abs().max().item()
        ours_ms = median_ms(timed.ours, repeat=repeat)
        base_ms = median_ms(timed.baseline, repeat=repeat)
    row = {"name": case.name, "shape": case.shape, "ours_ms": round(ours_ms, 4),
           "baseline": case.baseline, "baseline_ms": round(base_ms, 4),
           "ratio": round(base_ms / ours_ms, 3), "max_abs_err": err, "copies": copies_used}
    if case.memory_bound and case.bytes_moved is not None:
        row["gbps"] = round(case.bytes_moved() / (ours_ms * 1e-3) / 1e9, 2)
        row["peak_gbps"] = round(peak_gbps, 2)
    if case.target:
        row["target"] = case.target
    return row


def run(only: list[str] | None = None, repeat: int = 7, json_out: str | None = None,
        echo: Callable[[str], None] = print) -> list[dict]:
    """Run the (selected) cases; print a table; optionally write the JSON list atomically."""
    from ..fileio import atomic_write_text

    torch.set_num_threads(torch.get_num_threads())
    peak, readers = peak_read_gbps()
    echo(threads_line())
    echo("peak read bandwidth (best streaming reader over >= 1 GiB): " + f"{peak:.1f} GB/s ("
         + ", ".join(f"{name} {gbps:.1f}" for name, gbps in readers.items()) + ")")
    rows = []
    for case in all_cases():
        if only and not any(o in case.name for o in only):
            continue
        row = run_case(case, peak, repeat)
        rows.append(row)
        extra = f"  {row['gbps']:6.1f} GB/s ({row['gbps'] / peak:4.0%} of peak)" if "gbps" in row else ""
        echo(f"{row['name']:28s} {row['shape']:40s} ours {row['ours_ms']:9.3f} ms  "
             f"{row['baseline']} {row['baseline_ms']:9.3f} ms  x{row['ratio']:6.2f}  "
             f"err {row['max_abs_err']:.2e}{extra}")
    if json_out:
        atomic_write_text(json_out, json.dumps(rows, indent=2) + "\n")
    return rows
