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

from dataclasses import dataclass

from tvm import s_tir
from tvm.s_tir import dlight as dl

from ..registry import cpu_rule

_STACK_BYTES = 1024  # TVM puts "global" constant allocations under this size on the stack
_PARTITION = "pragma_loop_partition_hint"


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if hasattr(ext, "value") else None


def pick_lanes(k: int, want: int = 16) -> int:
    """The widest of want, want/2, ... 4 lanes that divides k (no k tail); `want` if none does
    (a tail predicate remains)."""
    lanes = want
    while lanes >= 4:
        if k % lanes == 0:
            return lanes
        lanes //= 2
    return want


def _rfactor_lanes(sch: s_tir.Schedule, block, lanes: int):
    """Split the reduction loop k (the last loop of `block`) into [ko, lanes] and rfactor the
    lanes: returns (rf_block, ko_extent_has_tail)."""
    k = sch.get_loops(block)[-1]
    k_ext = _extent(sch, k)
    ko, _ = sch.split(k, [None, lanes])
    rf = sch.rfactor(sch.get_loops(block)[-1], factor_axis=len(sch.get_loops(block)) - 2)
    return rf, (k_ext is None or k_ext % lanes != 0)


@dataclass
class Tiled:
    """Handles of a scheduled reduction block: the reduction-factor block holding the vector
    partial sums, its outer reduction loop, the loops to vectorise / unroll, the outer output
    loop (parallel) and the loops carrying a tail (peeled by LoopPartition)."""

    rf: object
    ko: object
    vector: object
    unroll: tuple
    outer: object
    tails: tuple = ()


def gemv_tile(batch: int, k: int, n: int) -> tuple[int, int]:
    """Default (lanes, rows) of the GEMV by batch, measured on the 2-core Zen 4 (single-thread
    CPU time, weights of Hymba's projections):
    * batch 1-2: the weight stream is the cost; one weight row at a time (one sequential stream
      per thread: two interleaved rows ran 2.5x slower once the weight no longer fit in L3)
      and 32 lanes (two FMA chains per batch row: +20-40% over 16 on long rows);
    * batch >= 4: FMA/load bound; 8 lanes x 2 weight rows (x is read once per 2 rows, 16
      accumulators): 46 vs 34 GFLOP/s at batch 8. At batch 4-7, 4 weight rows (each x vector
      reused 4 times): in_proj 8960x1600 bf16 at batch 4, 1.25 ms vs 1.4-2.4 ms with 2 rows.
    A k tail is peeled off (LoopPartition), so lanes need not divide k: at dt_proj's k = 100,
    16 lanes + a tail beat 4 lanes without one."""
    if batch <= 2:
        return (32 if k % 32 == 0 else 16), 1
    if batch < 4:
        return 16, 1
    if batch < 8 and n % 4 == 0:
        return 8, 4
    return 8, 2 if n % 2 == 0 else 1


def gemv_block_loops(sch: s_tir.Schedule, block, batch: int, k: int, n: int,
                     lanes: int | None = None, rows: int | None = None,
                     k_tail: bool = True) -> Tiled:
    """Loop structure of a row-parallel GEMV for a reduction block y[b, j] = sum_k ...
    (loops b, j, k): per `rows` output rows j, all batch rows against the same weight vectors,
    `lanes` of k in a vector register; the write-back (horizontal add) under the same j loop.
    No annotations yet (see `finish`), so that callers can still merge loops.

    k_tail=False: lanes divide k (down to 1 for odd k). Needed when several such blocks share a
    merged loop: with a tail predicate, the second decompose_reduction under the merged loop
    is refused ("not a reduction block", TVM 0.27)."""
    default_lanes, default_rows = gemv_tile(batch, k, n)
    lanes, rows = lanes or default_lanes, rows or default_rows
    if not k_tail:
        lanes = next(d for d in (lanes, 32, 16, 8, 4, 2, 1) if d <= lanes and k % d == 0)
    while lanes > 4 and batch * rows * lanes * 4 >= _STACK_BYTES:
        lanes //= 2
    while rows > 1 and (n % rows or batch * rows * lanes * 4 >= _STACK_BYTES):
        rows -= 1
    rf, has_tail = _rfactor_lanes(sch, block, lanes)
    b, j, ko, kv = sch.get_loops(rf)
    jo, ji = sch.split(j, [None, rows])
    sch.reorder(jo, ko, b, ji, kv)
    sch.reverse_compute_at(block, jo)
    return Tiled(rf, ko, kv, (b, ji), jo, (ko,) if has_tail else ())


def finish(sch: s_tir.Schedule, *tiled: Tiled, parallel: bool = True) -> None:
    """Annotations of one or more `Tiled` blocks sharing their outer loop (merged loops):
    parallel outer loop, vector lanes, unrolled register tile, tail partition hints, and then
    the accumulator initialisations split off (vectorised). The order matters: `parallel` and
    `vectorize` are refused once a loop holds a decomposed (init + update) reduction."""
    if parallel:
        sch.parallel(tiled[0].outer)
    for t in tiled:
        for loop in t.tails:
            sch.annotate(loop, _PARTITION, 1)
        sch.vectorize(t.vector)
        for loop in t.unroll:
            sch.unroll(loop)
    for t in tiled:
        init = sch.decompose_reduction(t.rf, t.ko)
        sch.vectorize(sch.get_loops(init)[-1])


def gemv_block(sch: s_tir.Schedule, block, batch: int, k: int, n: int, lanes: int | None = None,
               rows: int | None = None, parallel: bool = True):
    """`gemv_block_loops` then `finish`; returns the outer (parallel) output-row loop."""
    t = gemv_block_loops(sch, block, batch, k, n, lanes, rows)
    finish(sch, t, parallel=parallel)
    return t.outer


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def gemm_block_loops(sch: s_tir.Schedule, block, n: int, k: int, mr: int = 6, nr: int = 4,
                     lanes: int = 8, nb: int = 64, k_tail: bool = True):
    """Loop structure of a register-tiled GEMM for a reduction block y[i, j] = sum_k ...
    (loops i, j, k; i symbolic): tiles of mr x-rows by nr w-rows by `lanes` of k, w-row blocks
    of about nb rows outermost (parallel), x-row tiles, then the tiles of the block; the
    tile's write-back under its tile loop. Returns the `Tiled` handles (outer = the block
    loop) and the (x-row tile, w-row tile) loops (io, jb).

    Tiles are chosen to avoid n and k tails where the sizes allow (LoopPartition with int64 row
    indices fails on them with an int32/int64 mismatch in TVM 0.27): nr among 4, 3, 2 dividing
    n, lanes among 8, 4 dividing k, and the number of tiles per block a divisor of n / nr.
    Otherwise the tail stays a predicate (correct, slower). k_tail=False: lanes divide k (down
    to 1), as `gemv_block_loops` (for blocks that share merged loops)."""
    nr = next((r for r in (nr, 4, 3, 2) if n % r == 0), nr)
    while nr > 1 and mr * nr * lanes * 4 >= _STACK_BYTES:
        nr -= 1
    lanes = pick_lanes(k, lanes)
    if not k_tail:
        lanes = next(d for d in (lanes, 4, 2, 1) if d <= lanes and k % d == 0)
    tiles = -(-n // nr)
    per_block = max(1, nb // nr)
    if n % nr == 0 and _largest_divisor(tiles, per_block) * 4 >= per_block:
        per_block = _largest_divisor(tiles, per_block)
    rf, _ = _rfactor_lanes(sch, block, lanes)
    i, j, ko, kv = sch.get_loops(rf)
    jo, jb, ji = sch.split(j, [None, per_block, nr])
    io, ii = sch.split(i, [None, mr])
    sch.reorder(jo, io, jb, ko, ii, ji, kv)
    sch.reverse_compute_at(block, jb)
    # One mr x nr x lanes tile of accumulators per (io, jb): index the rf buffer by the tile
    # offsets so that it compacts to a constant size (the row tail would otherwise make its
    # extent depend on m).
    sch.transform_layout(rf, ("write", 0),
                         lambda a, b, c: (a // mr, b // nr, a % mr, b % nr, c),
                         assume_injective_transform=True)
    return Tiled(rf, ko, kv, (ii, ji), jo, (io,)), (io, jb)


def gemm_block(sch: s_tir.Schedule, block, n: int, k: int, mr: int = 6, nr: int = 4,
               lanes: int = 8, nb: int = 64):
    """`gemm_block_loops` then `finish`; returns (block loop, x-row tile loop, w-row tile loop)."""
    t, (io, jb) = gemm_block_loops(sch, block, n, k, mr, nr, lanes, nb)
    finish(sch, t)
    return t.outer, io, jb


@cpu_rule("gemv", "rows")
def gemv_rows(func, target, rows: int | None = None):
    """Ours: output rows in parallel, batch rows and `lanes` of k in registers (`gemv_tile`)."""
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("y")
    b, j, k = (_extent(sch, loop) for loop in sch.get_loops(block))
    gemv_block(sch, block, b, k, j, rows=rows)
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


@cpu_rule("matmul", "tiles")
def matmul_tiles(func, target, mr: int = 6, nr: int = 4, lanes: int = 8, nb: int = 64):
    """Ours: 6x4 register tiles of 8-lane accumulators, 64-row weight blocks in parallel."""
    sch = s_tir.Schedule(func)
    block = sch.get_sblock("y")
    _, n, k = (_extent(sch, loop) for loop in sch.get_loops(block))
    gemm_block(sch, block, n, k, mr=mr, nr=nr, lanes=lanes, nb=nb)
    return sch
