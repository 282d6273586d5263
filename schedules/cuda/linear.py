"""CUDA rule for the decode GEMV (ir/linear.py `gemv`): y[b, j] = sum_k x[b, k] * w[j, k],
batch 1..16, memory bound: every weight byte is read once per call, so the rule is about the
weight stream.

Each output row j is one warp (`rows` warps per thread block: `rows` divides n_out, so no row
tail and no predicate on the final store). A lane reads `vec` consecutive weights at a time (16
bytes: 4 fp32 or 8 bf16 as one vector load; fewer where k is not a multiple of that) at
k = (step * 32 + lane) * vec, so a warp reads 512 contiguous bytes per step; it multiplies them
with the B activation rows (read through L1, shared by the block's warps) into B fp32 partial
sums in registers; the warp then adds its 32 lanes' partial sums (an allreduce: shuffles). Blocks = n_out / rows: 8960 / 4 = 2240 for
in_proj, enough to fill any GPU at batch 1.

dlight's GEMV rule, which this replaces, wrote past the end of y when n_out is smaller than its
row tile (Oclgrind: an invalid global write in gemv_b1_8x16, 8 rows of a 16-row block)."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule

LANES = 32


def _rows_per_block(n: int) -> int:
    """Warps (output rows) per block: the largest of 4, 3, 2, 1 dividing n (no row tail). 3
    serves Hymba's vocabulary, 32001 = 3 x 10667: with one-warp blocks ptxas gave that lm_head
    GEMV 76 registers on sm_120 (38 with three warps)."""
    return next(r for r in (4, 3, 2, 1) if n % r == 0)


def _vector(k: int, want: int) -> int:
    """Weights per vector load: `want` (16 bytes) or the largest power of two below it dividing k
    (a chunk never straddles the end of a row)."""
    while k % want:
        want //= 2
    return want


def warp_rows(sch: s_tir.Schedule, y, weight: int, rows: int | None = None):
    """The schedule of the module docstring on block `y` (loops b, j, k; y[b, j] += ... w[j, k]
    with `weight` the index of w among the block's reads), `rows` warps per block (None:
    `_rows_per_block`; it must divide n_out). Returns (the blockIdx loop, rows per block) for
    rules that put more under each block (schedules/cuda/combine.py)."""
    b, j, k = sch.get_loops(y)
    n, kk = int(sch.get(j).extent), int(sch.get(k).extent)
    wdtype = str(sch.get(y).reads[weight].source.dtype)
    vec = _vector(kk, 16 // (2 if "bfloat16" in wdtype else 4))
    if rows is not None and n % rows:
        raise ValueError(f"{rows} warps per block do not divide {n} output rows")
    rows = rows or _rows_per_block(n)
    # k = (step * LANES + lane) * vec + v: lane-strided 16-byte chunks
    step, lane, v = sch.split(k, factors=[None, LANES, vec])
    rf = sch.rfactor(lane, factor_axis=0)  # rf[lane, b, j]: per-lane partial sums
    jo, ji = sch.split(sch.get_loops(rf)[1], factors=[None, rows])
    b_rf, _, _, step, lane, v = sch.get_loops(rf)
    sch.reorder(jo, ji, lane, step, v, b_rf)
    sch.bind(jo, "blockIdx.x")
    sch.bind(ji, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    sch.set_scope(rf, 0, "local")
    w_local = sch.cache_read(rf, weight, "local")  # the 16-byte weight chunk, one vector load
    sch.compute_at(w_local, step)
    if vec > 1:
        sch.vectorize(sch.get_loops(w_local)[-1])
    sch.unroll(v)
    sch.unroll(b_rf)
    sch.reverse_compute_at(y, ji)
    # y's regenerated loops under the row: (lane, b) in some order; batch rows outside, the
    # allreduce over the warp's lanes inside (one per batch row)
    lane_y, = [l for l in sch.get_loops(y)[2:] if int(sch.get(l).extent) == LANES][-1:]
    others = [l for l in sch.get_loops(y)[2:] if not sch.get(l).same_as(sch.get(lane_y))]
    if others:
        sch.reorder(*others, lane_y)
    sch.bind(lane_y, "threadIdx.x")
    sch.decompose_reduction(rf, step)
    return jo, rows


@cuda_rule("gemv", "warp_rows", grid={"rows": (None, 1, 2, 8)})
def gemv_warp_rows(func, target, rows: int | None = None):
    """See the module docstring."""
    sch = s_tir.Schedule(func)
    warp_rows(sch, sch.get_sblock("y"), weight=1, rows=rows)
    return sch
