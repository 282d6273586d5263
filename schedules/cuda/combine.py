"""CUDA rule for the decode combine (ir/combine.py `hybrid_combine_decode`): out_proj of the
average of the attention and SSM branches' RMSNorms, y[b, j] = sum_k fused[b, k] * W[j, k] with
fused[b, k] = (w1[k] attn[b, k] r1[b] + w2[k] ssm[b, k] r2[b]) / 2, in ONE kernel.

The GEMV is `linear.gemv_warp_rows`'s (a warp per output row, lane-strided 16-byte weight
chunks, partial sums in registers, a warp allreduce), with `fused` computed inline from attn and
ssm as the weights stream by. The two sums of squares per batch row (r1, r2) are computed at the
start of every thread block by all its threads (an allreduce over threadIdx.y x threadIdx.x)
into shared memory: each block re-reads attn and ssm (2 x batch x d_inner fp32, from L2) instead
of a separate statistics kernel and its launch. dlight makes three kernels of it. Up to
MAX_BATCH rows: beyond, the per-block statistics cost more (and the batch's partial sums take
72-80 registers at 16 rows), and dlight's three kernels serve."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule
from .linear import LANES, _rows_per_block, _vector


MAX_BATCH = 8


def _read_index(sch, block, name: str) -> int:
    names = [str(r.source.name) for r in sch.get(block).reads]
    return names.index(name)


@cuda_rule("hybrid_combine_decode", "warp_rows")
def combine_warp_rows(func, target):
    """See the module docstring."""
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("fused"))
    y = sch.get_sblock("y")
    b, j, k = sch.get_loops(y)
    if int(sch.get(b).extent) > MAX_BATCH:
        return None
    n, kk = int(sch.get(j).extent), int(sch.get(k).extent)
    w_name = "out_w"
    wdtype = str(sch.get(y).reads[_read_index(sch, y, w_name)].source.dtype)
    vec = _vector(kk, 16 // (2 if "bfloat16" in wdtype else 4))
    rows = _rows_per_block(n)
    step, lane, v = sch.split(k, factors=[None, LANES, vec])
    rf = sch.rfactor(lane, factor_axis=0)
    jo, ji = sch.split(sch.get_loops(rf)[1], factors=[None, rows])
    b_rf, _, _, step, lane, v = sch.get_loops(rf)
    sch.reorder(jo, ji, lane, step, v, b_rf)
    sch.bind(jo, "blockIdx.x")
    sch.bind(ji, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    sch.set_scope(rf, 0, "local")
    w_local = sch.cache_read(rf, _read_index(sch, rf, w_name), "local")
    sch.compute_at(w_local, step)
    if vec > 1:
        sch.vectorize(sch.get_loops(w_local)[-1])
    sch.unroll(v)
    sch.unroll(b_rf)
    sch.reverse_compute_at(y, ji)
    lane_y, = [l for l in sch.get_loops(y)[2:] if int(sch.get(l).extent) == LANES][-1:]
    others = [l for l in sch.get_loops(y)[2:] if not sch.get(l).same_as(sch.get(lane_y))]
    if others:
        sch.reorder(*others, lane_y)
    sch.bind(lane_y, "threadIdx.x")
    sch.decompose_reduction(rf, step)
    for name in ("ss_attn", "ss_ssm"):  # per block: all rows x LANES threads reduce them
        ss = sch.get_sblock(name)
        sch.compute_at(ss, jo)
        k_ss = sch.get_loops(ss)[-1]
        _, ty, tx = sch.split(k_ss, factors=[None, rows, LANES])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.set_scope(ss, 0, "shared")
    return sch
