"""A GPU schedule for what Relax legalizes around our kernels (concat of the meta keys with the
prompt's, slices, copies) when a loop extent is symbolic: dlight's Fallback fuses every loop and
fails to split `2 * (n + 8) * 16` by its thread count. Here the static loops are fused over the
lanes and the symbolic ones go to the grid, so nothing has to divide a symbolic extent."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import get_root_block

THREADS = 256


def _static(sch: s_tir.Schedule, loop) -> bool:
    return isinstance(sch.get(loop).extent, tirx.IntImm)


class SymbolicElementwise(dlight.ScheduleRule):
    """One spatial block, at least one loop of symbolic extent: symbolic loops -> blockIdx.x
    (fused), static loops -> blockIdx.y x threadIdx.x (fused, split by up to 256 lanes)."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):  # noqa: ARG002
        if not isinstance(func, tirx.PrimFunc) or func.attrs is not None and \
                func.attrs.get("tirx.is_scheduled", False):
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = sch.get_child_blocks(get_root_block(sch))
        except ValueError:  # a body that is not one root block
            return None
        if len(blocks) != 1:
            return None
        block = blocks[0]
        if any(v.iter_type != tirx.IterVar.DataPar for v in sch.get(block).iter_vars):
            return None
        loops = sch.get_loops(block)
        symbolic = [l for l in loops if not _static(sch, l)]
        static = [l for l in loops if _static(sch, l)]
        if not symbolic:
            return None  # dlight's rules handle static shapes
        sch.reorder(*symbolic, *static)
        grid = sch.fuse(*symbolic) if len(symbolic) > 1 else symbolic[0]
        sch.bind(grid, "blockIdx.x")
        if not static:
            return sch
        lanes = sch.fuse(*static) if len(static) > 1 else static[0]
        extent = int(sch.get(lanes).extent)
        outer, lane = sch.split(lanes, factors=[None, min(THREADS, extent)])
        sch.bind(outer, "blockIdx.y")
        sch.bind(lane, "threadIdx.x")
        return sch

