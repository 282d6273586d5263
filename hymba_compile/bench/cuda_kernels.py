"""`python -m hymba_compile bench kernels --target cuda:sm_XX --dry`: the kernel bench cases as a
CUDA arch would run them, without a GPU.

Per case (its Hymba-1.5B shape, as `bench kernels` times it on the CPU): the PrimFuncs it runs,
built with the arch's knobs (`schedules.options.build_for`) and scheduled with their default
CUDA variant (`schedules.registry.schedule`, the variant it resolved to is shown); lowered into
one CUDA source (`cuda_compile.lower_cuda`) and assembled by ONE nvcc call for the arch, whose
ptxas report gives registers, shared memory, spills and stack frame per device kernel (a case
shows the largest over its device kernels; `launches` counts them). Bytes moved and FLOPs per
call come from the case's shapes (bench/kernels.py), and `floor_us` is the time an H200 would
need at H200_GBPS and H200_TFLOPS, whichever binds: the bound a GPU run's times are held to.

`pocl_err`: each PrimFunc also runs at a small static size (the case's `KernelCall.small_args`)
as the CUDA path schedules it, lowered to OpenCL on pocl's CPU device
(`hymba_compile.pocl.build_pocl_kernel`), against the CPU build of the same builder and
arguments with the CPU knobs (`build.build_kernel`), on the same random inputs: the max abs
difference over every output (and in-place state). `--no-pocl` skips it ("skipped").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .kernels import DTYPES, KernelCall, KernelCase, all_cases

# What an H200 sustains (of 4.8 TB/s HBM3e and 989 dense bf16 tensor TFLOP/s on paper).
H200_GBPS = 4300.0
H200_TFLOPS = 790.0
DEFAULT_OUT = "cuda-kernels.json"
_TORCH = {**DTYPES, "int32": torch.int32, "int64": torch.int64, "float16": torch.float16}


def default_out() -> Path:
    """bench/results/cuda-kernels.json of the repository (next to kernels-cpu.json), else of
    the current folder."""
    repo = Path(__file__).resolve().parents[2] / "bench" / "results"
    return (repo if repo.is_dir() else Path.cwd() / "bench" / "results") / DEFAULT_OUT


@dataclass
class Func:
    """One PrimFunc of the selected cases, scheduled for the arch."""

    call: KernelCall
    symbol: str
    family: str
    variant: str
    mod: object = field(repr=False)
    kernels: list = field(default_factory=list)  # its device kernels' KernelResources
    launches: int = 0
    error: str = ""


def _last_line(e: Exception) -> str:
    from ..cuda_compile import error_line

    return error_line(e)[:300]


def _cuda_variant_ok(case: KernelCase, target) -> bool:
    """False for a case that times a CPU-only schedule variant (its CUDA twin is the default)."""
    if case.variant is None:
        return True
    from hymba_compile.schedules.registry import variants

    call = case.kernels[0]
    return case.variant in variants(call.builder(*call.args, **call.kwargs), target)


# ------------------------------------------------------------------------------ numerical check

def _shape(dims: tuple, env: dict) -> tuple[int, ...]:
    from tvm import tirx

    from ..tir_eval import evaluate
    return tuple(int(d) if isinstance(d, (int, tirx.IntImm)) else int(evaluate(d, env))
                 for d in dims)


def make_inputs(func, dims: dict, ranges: dict, seed: int = 0) -> list[torch.Tensor]:
    """Random tensors for every parameter of `func` (all buffers): symbolic dims from `dims`
    (var name -> size, default 3); floats standard normal or uniform in ranges[name]; ints 0 or
    uniform integers in ranges[name] (both ends included)."""
    from tvm import tirx
    from tvm.tirx.buffer import BufferType

    g = torch.Generator().manual_seed(seed)
    env = {}
    for var in func.params:
        if not isinstance(var.ty, BufferType):
            raise NotImplementedError(f"scalar parameter {var.name}")
        for d in var.shape:
            if isinstance(d, tirx.Var):
                env.setdefault(d, dims.get(d.name, 3))
    tensors = []
    for var in func.params:
        shape, dtype = _shape(tuple(var.shape), env), str(var.dtype)
        low_high = ranges.get(var.name)
        if dtype.startswith("int"):
            lo, hi = low_high or (0, 0)
            t = torch.randint(int(lo), int(hi) + 1, shape, generator=g, dtype=_TORCH[dtype])
        elif low_high is not None:
            lo, hi = low_high
            t = (lo + (hi - lo) * torch.rand(shape, generator=g)).to(_TORCH[dtype])
        else:
            t = torch.randn(shape, generator=g).to(_TORCH[dtype])
        tensors.append(t)
    return tensors


def pocl_error(call: KernelCall, cuda_target: str) -> float:
    """Max abs difference between the CUDA schedule on pocl and the CPU build, over every
    parameter the kernel writes, at the call's small size. NaN where exactly one side is NaN."""
    from hymba_compile.schedules import named_target
    from hymba_compile.schedules.options import build_for
    from hymba_compile.schedules.registry import as_written_variant

    from ..build import build_kernel
    from ..pocl import build_pocl_kernel

    args = call.small_args if call.small_args is not None else call.args
    gpu_func = build_for(call.builder, args, named_target(cuda_target), **call.kwargs)
    cpu_func = call.builder(*args, **call.kwargs)
    gpu = build_pocl_kernel(gpu_func, cuda_target)
    cpu = build_kernel(cpu_func, variant=as_written_variant(cpu_func, named_target("cpu")))
    inputs = make_inputs(gpu_func, call.dims, call.ranges)
    on_gpu, on_cpu = [t.clone() for t in inputs], [t.clone() for t in inputs]
    gpu(*on_gpu)
    cpu(*on_cpu)
    err = 0.0
    for p, a, b in zip(gpu.program.params, on_gpu, on_cpu):
        if not p.written:
            continue
        a, b = a.double(), b.double()
        if (a.isnan() != b.isnan()).any():
            return math.nan
        both = ~a.isnan()
        if both.any():
            err = max(err, (a[both] - b[both]).abs().max().item())
    return err


# ------------------------------------------------------------------------------ the dry run

def _schedule_all(cases: list[KernelCase], target) -> dict[tuple, Func]:
    """{(builder, args, kwargs): Func} for every PrimFunc of the cases (each scheduled once)."""
    from hymba_compile.schedules.options import build_for
    from hymba_compile.schedules.registry import family_of, schedule

    funcs: dict = {}
    for case in cases:
        for call in case.kernels:
            key = _key(call)
            if key in funcs:
                continue
            func = build_for(call.builder, call.args, target, **call.kwargs)
            symbol, family = str(func.attrs["global_symbol"]), family_of(func)
            try:
                mod, variant = schedule(func, target)
                funcs[key] = Func(call, symbol, family, variant, mod)
            except Exception as e:  # noqa: BLE001 - shown in the row
                funcs[key] = Func(call, symbol, family, "-", None, error=f"schedule: "
                                  f"{_last_line(e)}")
    return funcs


def _key(call: KernelCall) -> tuple:
    return (call.builder.__module__, call.builder.__name__, call.args,
            tuple(sorted(call.kwargs.items())))


def _compile(funcs: dict[tuple, Func], target, arch: str) -> str:
    """Lower every scheduled PrimFunc into one source, run nvcc once for `arch`, and attach
    each PrimFunc's device kernels and their resources. Returns a note ("" or why no nvcc)."""
    from .. import cuda_compile as cc

    by_symbol = {f.symbol: f for f in funcs.values() if f.mod is not None}
    code = cc.lower_cuda({s: f.mod for s, f in by_symbol.items()}, target, strict=False)
    for symbol, err in code.failed.items():
        by_symbol[symbol].error = f"lower: {err}"
    for symbol in code.host_only:
        by_symbol[symbol].error = "code left on the host (no GPU schedule)"
    for name, symbol in code.kernels.items():
        by_symbol[symbol].launches += 1
    if cc.find_nvcc() is None:
        return "nvcc not found: no resources (install the CUDA toolkit or nvidia-cuda-nvcc)"
    try:
        usage = cc.resource_usage(code, arch)
    except cc.CudaCompileError as e:
        return f"no resources: {_last_line(e)}"
    for name, symbol in code.kernels.items():
        r = usage.get(name)
        if r is not None:
            row = {k: getattr(r, k) for k in ("kernel", "registers", "shared_bytes",
                                                "spill_store_bytes", "spill_load_bytes",
                                                "stack_bytes", "max_threads")}
            row["dynamic_shared_bytes"] = code.dynamic_shared.get(name, 0)
            by_symbol[symbol].kernels.append(row)
    return ""


def _row(case: KernelCase, funcs: list[Func], arch: str, errors: dict, nvcc: str) -> dict:
    kernels = [k for f in funcs for k in f.kernels]

    def most(key: Callable[[dict], int]):
        return max((key(k) for k in kernels), default=None)

    bytes_moved = case.bytes_moved() if case.bytes_moved else None
    flops = case.flops() if case.flops else None
    floor = None
    if bytes_moved is not None and flops is not None:
        floor = max(bytes_moved / (H200_GBPS * 1e9), flops / (H200_TFLOPS * 1e12)) * 1e6
    errs = [errors.get(_key(f.call)) for f in funcs]
    numeric = [e for e in errs if isinstance(e, float)]
    if any(isinstance(e, str) for e in errs):
        pocl = next(e for e in errs if isinstance(e, str))
    else:
        pocl = max(numeric) if numeric else None
    return {
        "name": case.name, "shape": case.shape,
        "family": "+".join(dict.fromkeys(f.family for f in funcs)),
        "variant": "+".join(f.variant for f in funcs), "arch": arch,
        "registers": most(lambda k: k["registers"]),
        "shared_bytes": most(lambda k: k["shared_bytes"] + max(k["dynamic_shared_bytes"], 0)),
        "spill_bytes": most(lambda k: k["spill_store_bytes"] + k["spill_load_bytes"]),
        "stack_bytes": most(lambda k: k["stack_bytes"]),
        "launches": sum(f.launches for f in funcs),
        "bytes_moved": bytes_moved, "flops": flops,
        "floor_us": None if floor is None else round(floor, 3),
        "pocl_max_abs_err": pocl,
        "errors": [f"{f.symbol}: {f.error}" for f in funcs if f.error],
        "nvcc": nvcc,
        "kernels": [{"symbol": f.symbol, "family": f.family, "variant": f.variant,
                     "device_kernels": f.kernels} for f in funcs],
    }


def _human(n: float | None, unit: str) -> str:
    if n is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n:.3g} {unit}"


def _err(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v if v in ("skipped",) or v.startswith("n/a") else "ERROR"
    return "nan" if math.isnan(v) else f"{v:.1e}"


COLUMNS = [("name", "case", str), ("shape", "shape", str), ("family", "family", str),
           ("variant", "variant", str), ("arch", "arch", str), ("registers", "regs", str),
           ("shared_bytes", "smem", str), ("spill_bytes", "spills", str),
           ("stack_bytes", "stack", str), ("launches", "launches", str),
           ("bytes_moved", "bytes", lambda v: _human(v, "B")),
           ("flops", "FLOPs", lambda v: _human(v, "")),
           ("floor_us", "H200 floor us", lambda v: "-" if v is None else f"{v:.3g}"),
           ("pocl_max_abs_err", "pocl err", _err)]


def format_rows(rows: list[dict]) -> str:
    """The rows as a plain-text table (numbers right-aligned)."""
    cells = [[head for _, head, _ in COLUMNS]]
    for r in rows:
        cells.append(["-" if r[key] is None and show is str else show(r[key])
                      for key, _, show in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i < 5 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))) for row in cells)


def run(target: str = "cuda:sm_90", only: list[str] | None = None, json_out: str | None = None,
        check: bool = True, echo: Callable[[str], None] = print) -> list[dict]:
    """The dry run over the (selected) cases: print the table, write the JSON list (to
    `json_out`, default `default_out()`), return the rows."""
    from hymba_compile.schedules import named_target

    from .. import cuda_compile as cc
    from ..fileio import atomic_write_text
    from ..pocl import pocl_unavailable_reason

    tgt = named_target(target)
    if tgt.kind.name != "cuda":
        raise ValueError(f"--dry needs a CUDA target (cuda:sm_XX), got {target!r}")
    arch = str(tgt.attrs["arch"])
    cases = [c for c in all_cases() if not only or any(o in c.name for o in only)]
    skipped = [c for c in cases if not c.kernels or not _cuda_variant_ok(c, tgt)]
    cases = [c for c in cases if c not in skipped]
    for c in skipped:
        echo(f"skipped {c.name} {c.shape}: a CPU-only schedule variant (the default one is "
             f"listed)" if c.kernels else f"skipped {c.name} {c.shape}: no kernels listed")
    if not cases:
        return []
    funcs = _schedule_all(cases, tgt)
    note = _compile(funcs, tgt, arch)
    if note:
        echo(note)
    nvcc = cc.nvcc_version() if not note else ""
    errors: dict = {}
    reason = pocl_unavailable_reason() if check else None
    for key, f in funcs.items():
        if not check:
            errors[key] = "skipped"
        elif reason is not None:
            errors[key] = f"n/a ({reason})"
        else:
            try:
                errors[key] = pocl_error(f.call, target)
            except Exception as e:  # noqa: BLE001 - shown in the row
                errors[key] = f"error: {_last_line(e)}"
    rows = [_row(c, [funcs[_key(k)] for k in c.kernels], arch, errors, nvcc) for c in cases]
    echo(format_rows(rows))
    for r in rows:
        err = r["pocl_max_abs_err"]
        pocl = [f"pocl check: {err}"] if isinstance(err, str) and err.startswith("error") else []
        for problem in r["errors"] + pocl:
            echo(f"{r['name']} {r['shape']}: {problem}")
    out = Path(json_out) if json_out else default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
    echo(f"wrote {out} ({len(rows)} rows; floor_us at {H200_GBPS / 1000:.1f} TB/s and "
         f"{H200_TFLOPS:.0f} TFLOP/s)")
    return rows
