"""CPU schedules for RMSNorm and residual-add + RMSNorm: rows in parallel, each row computing
its (optional) residual sum, its sum of squares and its output in turn, elementwise loops
vectorised."""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import dlight as dl

from ..registry import cpu_rule


@cpu_rule("rmsnorm", "rows")
@cpu_rule("add_rmsnorm", "rows")
def rows(func, target, lanes: int = 16):
    """Ours: all blocks of a row fused under one parallel row loop (reverse_compute_at), the
    spatial (elementwise) inner loops split by `lanes` and vectorised."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    row = sch.get_loops(blocks[0])[0]
    for block in blocks[1:]:
        sch.reverse_compute_at(block, row)
    sch.parallel(row)
    for block in blocks:
        if sch.get(block).name_hint.endswith("_ss"):
            continue
        inner = sch.get_loops(block)[-1]
        _, vec = sch.split(inner, factors=[None, lanes])
        sch.vectorize(vec)
    return sch


@cpu_rule("rmsnorm", "dlight")
def dlight_reduction(func, target):
    """TVM's dlight.cpu.Reduction rule (parallel rows, vectorised injective blocks)."""
    return dl.cpu.Reduction().apply(func, target, False)
