"""Kernel scope of `explore` on the CPU: every kernel bench case (Hymba-1.5B shapes, the kernels
the program runs; hymba_compile/bench/kernel_cases/) x every point of each of its families'
spaces (`space.points`). Per point: build the case with that point (`build.choosing`), run it
once and compare with the case's eager reference twin (`Prepared.baseline`) at the
tolerance of its dtype; only a point that passes is timed (median of `repeat` batches) and
ranked. The case's eager baseline and its default point are timed in the same run.

Tolerance (max abs error vs the twin, relative to max(1, max |twin|)):
- fp32 twins: 1e-4. Both sides compute in fp32 in different summation orders over reductions
  of up to 8960 terms: the default kernels err by 2e-7..2e-6 relative here;
- bf16 cases (eager torch's bf16 path rounds inputs and outputs to bf16, 2^-8 relative each,
  while our kernels keep fp32 activations; the lm_head's twin returns fp32 logits of bf16
  arithmetic): 2^-5. The default kernels err by up to 2^-7.
A wrong kernel (a dropped tile, a bad index) errs at O(1) and fails either bound.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..bench.kernels import KernelCase, all_cases
from ..bench.timing import median_ms
from ..cuda_compile import error_line
from ..build import build_kernel, build_seconds, choosing, knobbed, tuned_schedule
from ..choices import TUNED, Choice
from .space import points

FP32_RTOL, BF16_RTOL = 1e-4, 2.0 ** -5  # vs the eager twin (module docstring)
BUILD_TIMEOUT_S = 60.0


@dataclass
class CaseFamilies:
    """A bench case and the kernel families it runs (that exploration varies)."""

    case: KernelCase
    families: list[str]


def case_families(case: KernelCase) -> list[str]:
    """The families of the PrimFuncs the case runs, in order, without repeats."""
    from hymba_compile.schedules.registry import family_of

    out = []
    for call in case.kernels:
        family = family_of(call.builder(*(call.small_args or call.args), **call.kwargs))
        if family not in out:
            out.append(family)
    return out


def select(families: list[str] | None, only: list[str] | None) -> list[CaseFamilies]:
    """The bench cases to explore: every case that does not pin a variant (those are comparison
    rows of the bench), restricted to cases running one of `families` and whose name contains one
    of `only`."""
    selected = []
    for case in all_cases():
        if case.variant is not None or not case.kernels:
            continue
        if only and not any(o in case.name for o in only):
            continue
        fams = case_families(case)
        if families:
            fams = [f for f in fams if f in families]
        if fams:
            selected.append(CaseFamilies(case, fams))
    return selected


def known_families() -> list[str]:
    """Every family some bench case runs."""
    return sorted({f for case in all_cases() if case.kernels for f in case_families(case)})


def kernel_symbols(case: KernelCase, family: str) -> list[str]:
    """The global symbols of the case's kernels of `family` (default knobs): the program's
    names for them at the same sizes."""
    from hymba_compile.schedules.registry import family_of

    funcs = [call.builder(*call.args, **call.kwargs) for call in case.kernels]
    return [str(f.attrs["global_symbol"]) for f in funcs if family_of(f) == family]


def has_tuned_records(case: KernelCase, family: str, target) -> bool:
    """Whether the tuning database in use (`build.tuning_database`) has a record for every
    kernel of `family` the case runs, at the case's sizes."""
    from hymba_compile.schedules.registry import family_of

    found = False
    for call in case.kernels:
        func = knobbed(call.builder, *call.args, **call.kwargs)
        if family_of(func) != family:
            continue
        if tuned_schedule(func, target) is None:
            return False
        found = True
    return found


def seeded_setup(case: KernelCase):
    """case.setup() from a fixed seed: every point of a case sees the inputs of its twin."""
    torch.manual_seed(0)
    return case.setup()


def tolerance(reference: torch.Tensor, case: KernelCase) -> float:
    """The module docstring's bound: bf16 when the twin computes in bf16 (a bf16 output, or a
    bf16 case whose twin returns fp32 after bf16 arithmetic, as the lm_head's logits)."""
    bf16 = reference.dtype == torch.bfloat16 or "bfloat16" in case.shape
    rtol = BF16_RTOL if bf16 else FP32_RTOL
    return rtol * max(1.0, reference.float().abs().max().item())


def _build_case_kernels(case: KernelCase, family: str, choice: Choice) -> None:
    """Build (and drop) the case's kernels of `family` with the point, as its setup would."""
    from hymba_compile.schedules.registry import family_of

    with choosing({family: choice}):
        for call in case.kernels:
            func = knobbed(call.builder, *call.args, **call.kwargs)
            if family_of(func) == family:
                build_kernel(func)


def build_finishes(case: KernelCase, family: str, choice: Choice,
                   timeout_s: float = BUILD_TIMEOUT_S) -> bool:
    """Whether the point's kernels build within `timeout_s`, tried in a forked child (an LLVM
    build can run away: TVM's dlight GEMV at 3200 x 100 bf16 did not finish in minutes), which
    is killed when late. A child that fails quickly counts as finished: the build is repeated
    here and its error reported."""
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_build_case_kernels, args=(case, family, choice), daemon=True)
    child.start()
    child.join(timeout_s)
    if child.is_alive():
        child.kill()
        child.join()
        return False
    return True


def run_point(case: KernelCase, family: str, choice: Choice, reference: torch.Tensor,
              repeat: int, keep: list | None = None) -> dict:
    """Build, verify and (if correct) time one point of one case; `keep` (a list) receives the
    prepared callables, to time the point again later."""
    row = {"case": case.name, "shape": case.shape, "family": family, "choice": choice.label(),
           **choice.to_json()}
    if choice != Choice() and not build_finishes(case, family, choice):
        row.update(status="failed", error=f"the build did not finish in {BUILD_TIMEOUT_S:.0f} s")
        return row
    before = build_seconds()
    t0 = time.perf_counter()
    try:
        with choosing({family: choice}):
            prepared = seeded_setup(case)
        row["build_s"] = round(build_seconds() - before, 3)
        row["setup_s"] = round(time.perf_counter() - t0, 3)
        with torch.inference_mode():
            out = prepared.ours()
            err = (out.float() - reference.float()).abs().max().item()
            tol = tolerance(reference, case)
            row.update(max_abs_err=err, tolerance=tol)
            if not math.isfinite(err) or err > tol:
                row.update(status="wrong", error=f"max abs error {err:.3g} > tolerance {tol:.3g}")
                return row
            row["ms"] = median_ms(prepared.ours, repeat=repeat)  # unrounded: ratios use it
        row["status"] = "ok"
        if keep is not None:
            keep.append(prepared)
    except Exception as e:  # noqa: BLE001  a failing variant is reported, never ranked
        row.update(status="failed", error=error_line(e)[:300])
    return row


def explore_case(cf: CaseFamilies, target, target_name: str, repeat: int,
                 variants: list[str] | None, on_row: Callable[[dict], None]) -> list[dict]:
    """All points of every family of one case. The eager baseline is timed first. The default
    is built once and timed again right after each point: a point's speed-up is over the
    default measured next to it (drift on a shared machine cancels); the default's own time is
    the median of all its timings."""
    case = cf.case
    baseline_prepared = seeded_setup(case)
    with torch.inference_mode():
        reference = baseline_prepared.baseline()
        baseline_ms = median_ms(baseline_prepared.baseline, repeat=repeat)
    del baseline_prepared
    rows, default_row, kept, default_times = [], None, [], []
    for family in cf.families:
        symbols = kernel_symbols(case, family)
        pts = points(family, target, target_name, variants)
        if (variants is None or TUNED in variants) and has_tuned_records(case, family, target):
            pts.append(Choice(TUNED))
        for choice in pts:
            if choice == Choice() and default_row is not None:
                continue  # the default point is the same for every family of the case
            row = run_point(case, family, choice, reference, repeat,
                            keep=kept if choice == Choice() else None)
            row.update(baseline=case.baseline, baseline_ms=baseline_ms, symbols=symbols)
            if choice == Choice():
                row["family"] = "+".join(cf.families)
                default_row = row
                default_times.append(row.get("ms"))
            elif row.get("ms") and kept:
                with torch.inference_mode():
                    row["default_ms_next"] = median_ms(kept[0].ours, repeat=repeat)
                default_times.append(row["default_ms_next"])
                row["vs_default"] = round(row["default_ms_next"] / row["ms"], 3)
            rows.append(row)
            on_row(row)
    if default_row is not None and default_row.get("ms"):
        default_row.update(ms_first=default_row["ms"], ms=statistics.median(default_times),
                           vs_default=1.0)
    for row in rows:
        if row.get("ms"):
            row["vs_baseline"] = round(baseline_ms / row["ms"], 3)
    return rows
