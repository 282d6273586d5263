"""CUDA rule for the RMSNorm row pipelines whose sums run over a single column (ir/norm.py,
and the norms inside ir/scan.py's ssm_input_split and ir/combine.py's norm_average).

Rows of two or more columns go to dlight's GeneralReduction rule (one block per row, lanes over
the columns, an allreduce of the sum of squares), verified on pocl at widths 2 to 3200. At width 1
that rule produces a kernel whose sum of squares reads the output buffer before writing it (NaN on
pocl; found by the pocl tests at d_state = 1): this rule declines every other function and
handles those, each root block its own kernel with a lane per element (the sums serial in their
lane)."""

from __future__ import annotations

from tvm import s_tir, tirx

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


ROW_THREADS = 256


def _row_threads(widths: list[int]) -> int:
    """Lanes per row: a power of two from 32 to ROW_THREADS, about a quarter of the widest
    part's columns (each lane then handles ~4 columns of it)."""
    threads = 32
    while threads < ROW_THREADS and threads * 4 < max(widths):
        threads *= 2
    return threads


@cuda_rule("rmsnorm", "row_block")
@cuda_rule("add_rmsnorm", "row_block")
@cuda_rule("ssm_input_split", "row_block")
@cuda_rule("norm_average", "row_block")
def row_block(func, target):
    """The whole row pipeline in ONE kernel, a thread block per row: every root block's row loop
    merged into one (blockIdx.x), each block's columns split over the same lanes (threadIdx.x)
    in the same order, the sums of squares reduced across the lanes (in-lane partial sums, then
    an allreduce) into shared memory. Where a block reads what an earlier block wrote (add_rmsnorm's
    h), the lane that reads a column is the lane that wrote it, so no barrier is needed; the
    shared sums get TVM's barrier. dlight makes one kernel per sum and per output (add_rmsnorm 3
    launches, ssm_input_split 6)."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    nests = [sch.get_loops(b) for b in blocks]
    if any(len(loops) != 2 for loops in nests):
        return None
    extents = [sch.get(loops[1]).extent for loops in nests]
    if any(not isinstance(e, tirx.IntImm) or int(e) < 2 for e in extents):
        return None  # a one-column sum: single_column's
    threads = _row_threads([int(e) for e in extents])
    row = sch.merge(*[loops[0] for loops in nests]) if len(nests) > 1 else nests[0][0]
    sch.bind(row, "blockIdx.x")
    for block in blocks:
        _, column = sch.get_loops(block)
        _, lane = sch.split(column, factors=[None, threads])
        sch.bind(lane, "threadIdx.x")
        if any(v.iter_type == tirx.IterVar.CommReduce for v in sch.get(block).iter_vars):
            sch.set_scope(block, 0, "shared")  # a sum of squares, read by every lane
    return sch
