"""Register tiling of the linears' reduction blocks on the CPU, shared by the linear, combine
(gate-up, hybrid combine) and embed (lm_head) rules: GEMV row tiles and GEMM register tiles with
fp32 partial sums in vector registers (rfactor over the innermost lanes of k). The measured traps
these helpers work around are in `schedules/cpu/linear.py`'s docstring."""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

_STACK_BYTES = 1024  # TVM puts "global" constant allocations under this size on the stack
_PARTITION = "pragma_loop_partition_hint"


def static_extent(sch: s_tir.Schedule, loop) -> int | None:
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
    k_ext = static_extent(sch, k)
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
