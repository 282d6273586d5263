"""CPU schedules for RMSNorm and residual-add + RMSNorm: rows in parallel, each row computing
its (optional) residual sum, its sum of squares and its output in turn (the row stays in L1
between the passes, so memory sees one read of each input and one write of each output), every
loop vectorised; the sum of squares through rfactor into several independent vector
accumulators, then a short horizontal sum."""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import dlight as dl

from ..registry import cpu_rule
from .rows import name_of, schedule_norm_rows


@cpu_rule("rmsnorm", "rows")
@cpu_rule("add_rmsnorm", "rows")
def rows(func, target):
    """Ours: see `schedule_norm_rows`."""
    sch = s_tir.Schedule(func)
    schedule_norm_rows(sch, sch.get_child_blocks(sch.get_sblock("root")))
    return sch


@cpu_rule("rmsnorm", "rows_serial")
@cpu_rule("add_rmsnorm", "rows_serial")
def rows_serial(func, target):
    """`rows` without the thread pool, for decode's few rows: a parallel launch costs ~2 us on
    an idle machine and far more when the cores are oversubscribed (the launch waits for a
    worker thread to be scheduled), while one 1600-wide row takes well under a microsecond."""
    sch = s_tir.Schedule(func)
    schedule_norm_rows(sch, sch.get_child_blocks(sch.get_sblock("root")), parallel=False)
    return sch


@cpu_rule("rmsnorm", "rows_scalar_ss")
@cpu_rule("add_rmsnorm", "rows_scalar_ss")
def rows_scalar_ss(func, target, lanes: int = 16):
    """The first version, kept for comparison: rows fused and parallel, elementwise loops
    vectorised, but the sum of squares a serial scalar loop (a 1600-long add chain per row)."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    row = sch.get_loops(blocks[0])[0]
    for block in blocks[1:]:
        sch.reverse_compute_at(block, row)
    sch.parallel(row)
    for block in blocks:
        if name_of(sch, block).endswith("_ss"):
            continue
        inner = sch.get_loops(block)[-1]
        _, vec = sch.split(inner, factors=[None, lanes])
        sch.vectorize(vec)
    return sch


@cpu_rule("rmsnorm", "dlight")
def dlight_reduction(func, target):
    """TVM's dlight.cpu.Reduction rule (parallel rows, vectorised injective blocks)."""
    return dl.cpu.Reduction().apply(func, target, False)
