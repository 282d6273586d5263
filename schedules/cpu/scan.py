"""CPU schedules for the selective scans (sequential and chunked prefill, decode update) and the
x_proj split + inner RMSNorms.

The scans' IR already walks the channels in tiles (ir/scan.py): one block per (batch, tile) with
the state tile h[N, tile] local, and one small block per step of the recurrence, each looping over
the tile's channels innermost. The rules here run the tiles in parallel, vectorise every
channel loop (channels are the contiguous axis of every operand), unroll the state loop, and
split the reduction inits off their loops (decompose_reduction), so that no per-step branch is
left inside the vectorised loops. Blocks that update a state in place (decode, chunk pass 2) are
refused by the checked vectorize/parallel; `conv.set_loop_kind` marks those loops directly.
"""

from __future__ import annotations

from tvm import s_tir

from ..registry import cpu_rule
from .common import set_loop_kind


def _vectorize_inner(sch, name: str, unroll_outer: bool = False) -> None:
    loops = sch.get_loops(sch.get_sblock(name))
    sch.vectorize(loops[-1])
    if unroll_outer:
        sch.unroll(loops[-2])


def _split_init(sch, name: str, loop_index: int) -> None:
    """decompose_reduction of block `name` above its loop `loop_index` (counted from the
    innermost), then vectorise the init block's innermost loop."""
    block = sch.get_sblock(name)
    init = sch.decompose_reduction(block, sch.get_loops(block)[loop_index])
    sch.vectorize(sch.get_loops(init)[-1])


def _parallel_tiles(sch, outer: str) -> None:
    """Parallel over the channel tiles of block `outer` (loops: batch, tile[, chunk]). Only the
    static tile loop is parallel (moved outermost): fusing the symbolic batch/chunk loops into it
    puts a symbolic floordiv/floormod into every index, and LLVM then takes 10-20x longer."""
    loops = sch.get_loops(sch.get_sblock(outer))
    if len(loops) > 1:
        sch.reorder(loops[1], loops[0])
    sch.parallel(loops[1])


def _scan_tile(sch, names: dict, parallel: bool, outer: str) -> None:
    """One tile block `outer` (loops: batch, tile[, chunk]) with its per-step blocks."""
    if parallel:
        _parallel_tiles(sch, outer)
    for name in names["elementwise"]:
        _vectorize_inner(sch, name)
    for name in names["state"] + names["dot"]:   # loops (t, n, w): unroll n, vectorise w
        _vectorize_inner(sch, name, unroll_outer=True)
    for name in names["state"]:          # the state init (from h0 / 0 / hs) goes above t
        _split_init(sch, name, -3)
    for name in names["dot"]:            # acc init above the n loop
        _split_init(sch, name, -2)


SEQUENTIAL = {"elementwise": ["load_A", "delta_in", "delta", "out", "store"], "state": ["step"],
              "dot": ["dot"]}


@cpu_rule("selective_scan", "tiles")
def scan_tiles(func, target):
    """Ours: channel tiles in parallel (50 of 64 channels at Hymba size; the batch runs inside a
    tile); per step, the tile's channels vectorised and the state loop unrolled. L = 1024 at
    Hymba size: ~7.5 ms on 2 threads, 12.5 ms on one (`serial`)."""
    sch = s_tir.Schedule(func)
    _scan_tile(sch, SEQUENTIAL, True, "scan")
    return sch


@cpu_rule("selective_scan", "serial")
def scan_serial(func, target):
    """The same per-tile code on one thread (to measure the parallel speed-up against)."""
    sch = s_tir.Schedule(func)
    _scan_tile(sch, SEQUENTIAL, False, "scan")
    return sch


CHUNK_PASS1 = {"elementwise": ["load_A1", "delta_in1", "delta1", "store1", "store_sum1"],
               "state": ["step1"],
               "dot": []}
CHUNK_PASS3 = {"elementwise": ["load_A3", "delta_in3", "delta3", "out3"], "state": ["step3"],
               "dot": ["dot3"]}


@cpu_rule("selective_scan_chunked", "tiles")
def chunked_tiles(func, target):
    """Ours: each pass parallel over the channel tiles (50 at Hymba size: plenty for a CPU; the
    chunks, the extra parallelism this form exists for, run in order inside a tile), every
    channel loop vectorised."""
    sch = s_tir.Schedule(func)
    _scan_tile(sch, CHUNK_PASS1, True, "chunk_scan")
    _vectorize_inner(sch, "sum1")
    _split_init(sch, "sum1", -2)
    _scan_tile(sch, CHUNK_PASS3, True, "chunk_out")
    # pass 2
    _parallel_tiles(sch, "chunk_pass")
    for name in ("load_A2", "pass_store", "store2"):
        _vectorize_inner(sch, name)
    # pass_step updates its running state in place: lanes are distinct channels
    set_loop_kind(sch, sch.get_loops(sch.get_sblock("pass_step"))[-1], "vectorize")
    return sch


def _update(sch, parallel: bool) -> None:
    b, dc = sch.get_loops(sch.get_sblock("update"))
    tiles = sch.fuse(b, dc)
    for name in ("load_A", "delta_in", "delta", "out"):
        _vectorize_inner(sch, name)
    _vectorize_inner(sch, "dot", unroll_outer=True)
    _split_init(sch, "dot", -2)
    # The state is updated in place, which the checked primitives refuse; tiles and lanes are
    # distinct channels. Loops of "step" are (n, w), w contiguous in the [b, N, D] state.
    n, w = sch.get_loops(sch.get_sblock("step"))[-2:]
    sch.unroll(n)
    set_loop_kind(sch, w, "vectorize")
    if parallel:
        set_loop_kind(sch, tiles, "parallel")


@cpu_rule("selective_state_update", "serial")
def update_serial(func, target):
    """Ours: one thread, channels vectorised, the state loop unrolled. A step is ~15 us of work
    at Hymba size; measured on the 2-core box, `parallel` was no faster (15-26 us): waking the
    pool and a busy second core cost what the split saves."""
    sch = s_tir.Schedule(func)
    _update(sch, False)
    return sch


@cpu_rule("selective_state_update", "parallel")
def update_parallel(func, target):
    """Channel tiles in parallel (for large batches or idle many-core machines)."""
    sch = s_tir.Schedule(func)
    _update(sch, True)
    return sch


@cpu_rule("ssm_input_split", "rows")
def split_rows(func, target):
    """Rows in parallel: each norm's sum of squares computed under its output's row loop, the
    three row loops merged into one parallel loop (one pool wake-up)."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    outputs = [b for b in blocks if not sch.get(b).name_hint.endswith("_ss")]
    rows = []
    for out in outputs:
        row = sch.get_loops(out)[0]
        for producer in sch.get_producers(out):
            sch.compute_at(producer, row)
        rows.append(row)
    sch.parallel(sch.merge(*rows) if len(rows) > 1 else rows[0])
    return sch
