"""CUDA rule for the RMSNorm row pipelines whose sums run over a single column (ir/norm.py,
and the norms inside ir/scan.py's ssm_input_split and ir/combine.py's norm_average).

Rows of two or more columns go to dlight's GeneralReduction rule (one block per row, lanes over
the columns, an allreduce of the sum of squares), verified on pocl at widths 2 to 3200. At width 1
that rule produces a kernel whose sum of squares reads the output buffer before writing it (NaN on
pocl; found by the pocl tests at d_state = 1): this rule declines every other function and
handles those, each root block its own kernel with a lane per element (the sums serial in their
lane)."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule

THREADS = 128


def _widths(sch, blocks) -> list[int]:
    return [int(sch.get(sch.get_loops(b)[-1]).extent) for b in blocks
            if sch.get(b).name_hint.endswith("_ss") and len(sch.get_loops(b)) == 2]


@cuda_rule("rmsnorm", "single_column")
@cuda_rule("add_rmsnorm", "single_column")
@cuda_rule("ssm_input_split", "single_column")
@cuda_rule("norm_average", "single_column")
def single_column(func, target):
    """Only when some sum of squares runs over one column: every root block a kernel, its
    spatial loops over lanes (a sum's reduction loop serial in the lane)."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if 1 not in _widths(sch, blocks):
        return None
    for b in blocks:
        loops = sch.get_loops(b)
        spatial = loops[:1] if sch.get(b).name_hint.endswith("_ss") else loops
        fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        grid, lane = sch.split(fused, factors=[None, THREADS])
        sch.bind(grid, "blockIdx.x")
        sch.bind(lane, "threadIdx.x")
    return sch
