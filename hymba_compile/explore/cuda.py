"""Kernel scope of `explore` on a CUDA target without a GPU: every point of each family of each
kernel bench case is built at the case's Hymba-1.5B shape for the arch (nvcc's ptxas report
gives registers, shared memory and spills per device kernel; all points of a case go through one
nvcc call), and verified at the case's small size on pocl (the TIR the CUDA path compiles,
lowered to OpenCL) against the CPU build of the same builder, itself property-tested against the
eager twin. Timing needs the device: the `ms` column says so, and no choice is recorded.

Tolerance of the pocl check (max abs difference relative to max(1, max |CPU output|)): 1e-4
for fp32 outputs (summation order), 2^-7 for bf16 outputs (one rounding step of bf16 falls on
either side of a boundary: the kernel tests' bound, tests/kernels/helpers.py).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import tvm

from ..build import builder_knobs
from ..choices import Choice
from ..cuda_compile import error_line
from .kernels import CaseFamilies
from .space import points

NEEDS_DEVICE = "needs a device"
POCL_FP32_RTOL, POCL_BF16_RTOL = 1e-4, 2.0 ** -7  # vs the CPU build (module docstring)


def _with_knobs(call, args, choice: Choice, family: str, target):
    """The call's PrimFunc at `args` with the target's knobs and the point's builder knobs (which
    win over the call's own keywords)."""
    from hymba_compile.schedules.options import build_for

    knobs = builder_knobs(call.builder, {family: choice})
    return build_for(call.builder, args, target, **{**call.kwargs, **knobs})


def pocl_check(call, family: str, choice: Choice, target, target_name: str) -> dict:
    """Max abs difference and tolerance of the point's kernel on pocl vs the CPU build, at the
    call's small size, over every buffer the kernel writes."""
    from ..bench.cuda_kernels import make_inputs
    from ..build import build_kernel
    from ..pocl import build_pocl_kernel
    from hymba_compile.schedules import named_target
    from hymba_compile.schedules.registry import as_written_variant, family_of

    args = call.small_args if call.small_args is not None else call.args
    func = _with_knobs(call, args, choice, family, target)
    own = family_of(func) == family
    gpu = build_pocl_kernel(func, target_name, choice.variant if own else None,
                            knobs=dict(choice.rule_knobs) if own else None)
    cpu_func = call.builder(*args, **call.kwargs)
    cpu = build_kernel(cpu_func, variant=as_written_variant(cpu_func, named_target("cpu")))
    inputs = make_inputs(func, call.dims, call.ranges)
    on_gpu, on_cpu = [t.clone() for t in inputs], [t.clone() for t in inputs]
    gpu(*on_gpu)
    cpu(*on_cpu)
    err, tol = 0.0, 0.0
    for p, a, b in zip(gpu.program.params, on_gpu, on_cpu):
        if not p.written:
            continue
        rtol = POCL_BF16_RTOL if b.dtype == torch.bfloat16 else POCL_FP32_RTOL
        a, b = a.double(), b.double()
        if (a.isnan() != b.isnan()).any():
            return {"pocl_err": math.nan, "tolerance": tol}
        both = ~a.isnan()
        if both.any():
            err = max(err, (a[both] - b[both]).abs().max().item())
            tol = max(tol, rtol * max(1.0, b[both].abs().max().item()))
    return {"pocl_err": err, "tolerance": tol}


def _resources(funcs: dict, target, arch: str) -> tuple[dict, dict]:
    """({point symbol: [device kernel resources]}, {point symbol: error}): one nvcc call for all
    the points, and one per point when that fails (a point over the shared-memory limit)."""
    from .. import cuda_compile as cc

    code = cc.lower_cuda(funcs, target, strict=False)
    errors = {s: f"lower: {e}" for s, e in code.failed.items()}
    errors.update({s: "code left on the host (no GPU schedule)" for s in code.host_only})
    try:
        usage = cc.resource_usage(code, arch) if code.kernels else {}
    except cc.CudaCompileError:
        if len(funcs) == 1:
            raise
        per, errors = {}, {}
        for symbol, mod in funcs.items():
            try:
                one, err = _resources({symbol: mod}, target, arch)
            except cc.CudaCompileError as e:
                one, err = {}, {symbol: "nvcc: " + _ptxas_error(e)}
            per.update(one)
            errors.update(err)
        return per, errors
    per: dict[str, list] = {}
    for name, symbol in code.kernels.items():
        r = usage.get(name)
        if r is not None:
            per.setdefault(symbol, []).append(r)
    return per, errors


def _ptxas_error(e: Exception) -> str:
    """The first `ptxas error` line of nvcc's message (else its last line)."""
    lines = [line.strip() for line in str(e).splitlines() if "error" in line]
    return (lines[1] if len(lines) > 1 and lines[0].startswith("nvcc failed") else
            (lines[0] if lines else error_line(e)[:300]))[:300]


def explore_case_cuda(cf: CaseFamilies, target, target_name: str, variants: list[str] | None,
                      on_row: Callable[[dict], None]) -> list[dict]:
    """Every point of every family of the case: resources at full size, pocl check."""
    from hymba_compile.schedules.registry import family_of, schedule

    arch = str(target.attrs["arch"])
    case, rows, funcs, owners = cf.case, [], {}, {}
    for family in cf.families:
        for n, choice in enumerate(points(family, target, target_name, variants)):
            if choice == Choice() and family != cf.families[0]:
                continue
            row = {"case": case.name, "shape": case.shape,
                   "family": "+".join(cf.families) if choice == Choice() else family,
                   "choice": choice.label(), **choice.to_json(), "ms": None,
                   "timing": NEEDS_DEVICE}
            try:
                for i, call in enumerate(case.kernels):
                    func = _with_knobs(call, call.args, choice, family, target)
                    own = family_of(func) == family
                    mod, _ = schedule(func, target, choice.variant if own else None,
                                      dict(choice.rule_knobs) if own else None)
                    symbol = f"{family}_p{n}_k{i}"
                    prim = mod["main"].with_attr("global_symbol", symbol)
                    funcs[symbol] = tvm.IRModule({"main": prim})
                    owners[symbol] = len(rows)
                checks = [pocl_check(call, family, choice, target, target_name)
                          for call in case.kernels]
                err = max(c["pocl_err"] for c in checks)
                tol = max(c["tolerance"] for c in checks)
                ok = math.isfinite(err) and err <= tol
                row.update(pocl_err=err, tolerance=tol, status="built" if ok else "wrong")
                if not ok:
                    row["error"] = f"pocl differs from the CPU build by {err:.3g} > {tol:.3g}"
            except Exception as e:  # noqa: BLE001  a failing variant is reported, never ranked
                row.update(status="failed", error=error_line(e)[:300])
            rows.append(row)
    good = {s: f for s, f in funcs.items() if rows[owners[s]]["status"] == "built"}
    if good:
        try:
            per, errors = _resources(good, target, arch)
        except Exception as e:  # noqa: BLE001  nvcc missing: said in every row
            per, errors = {}, {s: f"nvcc: {_ptxas_error(e)}" for s in good}
        for symbol in good:
            row = rows[owners[symbol]]
            if symbol in errors:
                row.update(status="failed", error=errors[symbol])
            for r in per.get(symbol, []):
                row["registers"] = max(row.get("registers", 0), r.registers)
                row["shared_bytes"] = max(row.get("shared_bytes", 0), r.shared_bytes)
                row["spill_bytes"] = row.get("spill_bytes", 0) + r.spill_store_bytes + \
                    r.spill_load_bytes
            row["launches"] = row.get("launches", 0) + len(per.get(symbol, []))
    for row in rows:
        on_row(row)
    return rows

