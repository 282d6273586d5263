"""CPU schedules for the linears (ir/linear.py): y[i, j] = sum_k x[i, k] * f32(w[j, k]) with the
weight in nn.Linear's [n_out, k] layout, so both operands are contiguous along k.

Both schedules keep fp32 partial sums in a vector register per output along k (an rfactor over
the innermost `lanes` of k), add the lanes up once per output at the end, and widen bf16 weights
to fp32 as they are loaded (`T.Cast` of a bf16 vector is a zero-extend and a shift).

* GEMV (decode, small static batch; memory bound): output rows j in parallel; for each weight
  row, all batch rows are accumulated against the same weight vector, so the weight is read
  once per call. `batch * rows * lanes / 16` independent vector accumulators.
* GEMM (prefill, symbolic m; compute bound): register tiles of `mr` x-rows by `nr` w-rows
  (mr*nr accumulators of `lanes` floats), k innermost; blocks of `nb` w-rows (kept in L2) in
  parallel, all x-row tiles of a block in turn (the x tile stays in L1 across the block).

Two measured traps shape this code (TVM 0.27, LLVM, CPU):
* An accumulator buffer in scope "local" is always heap-allocated through
  TVMBackendAllocWorkspace, whatever its size, and LLVM then keeps it in memory (a load and a
  store around every FMA). In the default "global" scope a constant-size buffer under 1 KiB
  becomes a stack alloca that LLVM promotes to registers. So accumulators stay "global" and
  their size is kept below 1 KiB.
* Tails (m not a multiple of mr; k or n not a multiple of the tile) become `if`s inside the
  register tile, which spill the accumulators (a 6x4 tile ran at 41 instead of 186 GFLOP/s).
  The loops that carry a tail get the `pragma_loop_partition_hint`, so LoopPartition peels
  the tail iterations off and the main body runs without conditions: the m tail of the GEMM
  and the k tail of the GEMV. (With the GEMM's int64 indices LoopPartition fails on n and k
  tails, so the GEMM picks tile sizes that divide n and k where it can.)

Measured (2-core Zen 4, TVM_NUM_THREADS=1, CPU time): GEMM 1152x1600 @ (8960x1600)^T fp32
92 GFLOP/s vs torch.matmul 91; bf16 weights 97 GFLOP/s at 6x4 tiles. GEMV bf16 batch 1:
25-42 GB/s per core.

bf16 weights on a CPU with avx512_bf16 default to the `bf16dot` variant (registered first; it
declines elsewhere, and the fp32-activation rules follow): x rounded to bf16 once per call,
then the dot-product instruction (schedules/cpu/dot.py). Measured on the 2-core Zen 4 (2
threads, 1152 x 1600 @ (8960 x 1600)^T): 311 GFLOP/s vs 154 for the fp32-activation tiles and
374 for torch's bf16 F.linear (oneDNN); GEMV batch 1/4/8: 0.47/1.59/2.55 ms vs 0.69/1.67/2.85.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import dlight as dl

from hymba_compile.ir import linear as ir_linear

from ..registry import cpu_rule
from . import dot
from .tiles import static_extent, gemm_block, gemv_block

def _shape(func):
    """(rows or None if symbolic, n, k, weight dtype) of a linear's y = x @ w^T."""
    sch = s_tir.Schedule(func)
    bufs = {str(r.source.name): r.source for r in sch.get(sch.get_sblock("y")).reads}
    x, w = bufs["x"], bufs["w"]
    rows = x.shape[0]
    return ((int(rows) if hasattr(rows, "value") else None), int(w.shape[0]), int(w.shape[1]),
            str(w.dtype))


@cpu_rule("gemv", "bf16dot", grid={"rows": (None, 1, 2, 4)})
def gemv_bf16dot(func, target, rows: int | None = None):
    """bf16 weights on a CPU with avx512_bf16: x rounded to bf16 once per call (ir/linear.py's
    activations="bfloat16"), then vdpbf16ps (schedules/cpu/dot.py); None elsewhere."""
    batch, n, k, dtype = _shape(func)
    if not dot.applies(dtype, k, target):
        return None
    rows = dot.gemv_dot_rows(batch, n, rows)
    if rows is None:
        return None
    twin = ir_linear.gemv(batch, n, k, "bfloat16", activations="bfloat16")
    sch = s_tir.Schedule(twin.with_attr("global_symbol", func.attrs["global_symbol"]))
    dot.gemv_dot_block(sch, sch.get_sblock("y"), batch, n, rows)
    return sch


@cpu_rule("matmul", "bf16dot", grid={"mr": (2, 3, 4, 6), "nr": (2, 3, 4), "nb": (32, 64)})
def matmul_bf16dot(func, target, mr: int = 3, nr: int = 4, nb: int = 64):
    """As `gemv_bf16dot` for the prefill GEMM (rows padded in the IR): register tiles of mr x
    nr 16-lane accumulators (3 x 4 measured fastest: 266 GFLOP/s vs 123 for 4 x 3 at 128 x
    1600 @ (32004 x 1600)^T); declines when the weight rows admit no block (`gemm_dot_tile`)."""
    _, n, k, dtype = _shape(func)
    if not dot.applies(dtype, k, target):
        return None
    tile = dot.gemm_dot_tile(n, mr, nr, ir_linear.PAD_ROWS, nb)
    if tile is None:
        return None
    twin = ir_linear.matmul(n, k, "bfloat16", activations="bfloat16")
    sch = s_tir.Schedule(twin.with_attr("global_symbol", func.attrs["global_symbol"]))
    dot.gemm_dot_block(sch, *tile)
    return sch


@cpu_rule("gemv", "rows", grid={"rows": (None, 1, 2, 4), "lanes": (None, 16, 32)})
def gemv_rows(func, target, rows: int | None = None, lanes: int | None = None):
    """Ours: output rows in parallel, batch rows and `lanes` of k in registers (None: the
    measured `gemv_tile` choice by batch)."""
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("y")
    b, j, k = (static_extent(sch, loop) for loop in sch.get_loops(block))
    gemv_block(sch, block, b, k, j, lanes=lanes, rows=rows)
    return sch


@cpu_rule("gemv", "rows2")
def gemv_rows2(func, target):
    """As `rows`, always two weight rows per step (faster while the weight is cache resident;
    slower streaming it from DRAM at batch 1)."""
    return gemv_rows(func, target, rows=2)


@cpu_rule("gemv", "dlight")
def gemv_dlight(func, target):
    """TVM's dlight.cpu.GEMV rule; it applies to batch 1 only (x must be a vector)."""
    return dl.cpu.GEMV().apply(func, target, False)


@cpu_rule("matmul", "tiles", grid={"mr": (4, 6, 8), "nr": (2, 4), "lanes": (8, 16)})
def matmul_tiles(func, target, mr: int = 6, nr: int = 4, lanes: int = 8, nb: int = 64):
    """Ours: 6x4 register tiles of 8-lane accumulators, 64-row weight blocks in parallel."""
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("y")
    _, n, k = (static_extent(sch, loop) for loop in sch.get_loops(block))
    gemm_block(sch, block, n, k, mr=mr, nr=nr, lanes=lanes, nb=nb)
    return sch

