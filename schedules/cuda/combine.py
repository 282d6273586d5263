"""CUDA rule for the decode combine (ir/combine.py `hybrid_combine_decode`): out_proj of the
average of the attention and SSM branches' RMSNorms, y[b, j] = sum_k fused[b, k] * W[j, k] with
fused[b, k] = (w1[k] attn[b, k] r1[b] + w2[k] ssm[b, k] r2[b]) / 2, in ONE kernel.

The GEMV is `linear.warp_rows` (a warp per output row, lane-strided 16-byte weight
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
from .linear import LANES, warp_rows

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
    if int(sch.get(sch.get_loops(y)[0]).extent) > MAX_BATCH:
        return None
    jo, rows = warp_rows(sch, y, weight=_read_index(sch, y, "out_w"))
    for name in ("ss_attn", "ss_ssm"):  # per block: all rows x LANES threads reduce them
        ss = sch.get_sblock(name)
        sch.compute_at(ss, jo)
        _, ty, tx = sch.split(sch.get_loops(ss)[-1], factors=[None, rows, LANES])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        sch.set_scope(ss, 0, "shared")
    return sch
