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
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir import dlight as dl

from ..registry import cpu_rule
from .tiles import static_extent, gemm_block, gemv_block

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
