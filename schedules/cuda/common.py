"""Helpers shared by the CUDA rules: map the hand-written "one outer block per work item, child
blocks over small loops" kernels of ir/ onto a GPU grid.

The pattern (attention, scans, RoPE, cache writes): an outer block per work item (a row and head,
a channel tile, a token) holds scratch buffers and a sequence of child blocks, each a small loop
nest. On a GPU the outer block's loops become the grid (blockIdx.x) and each child block's
parallel loops are fused and spread over the same `threads` lanes (threadIdx.x), with the child's
reduction loops kept serial inside each lane. Scratch that one child writes and another reads
through a different lane mapping goes to shared memory (TVM inserts the barriers); scratch that
every child touches through the same mapping stays in registers ("local": TVM compacts it to the
part one lane touches)."""

from __future__ import annotations

from collections.abc import Sequence

from tvm import s_tir


def own_loops(sch: s_tir.Schedule, block, siblings: Sequence) -> list:
    """The loops of `block` that enclose no other block of `siblings` (its own loop nest, below
    any loop it shares with its siblings, such as a key-block loop around several children)."""
    shared = set()
    for other in siblings:
        if not sch.get(other).same_as(sch.get(block)):
            shared.update(sch.get_sref(l) for l in sch.get_loops(other))
    return [l for l in sch.get_loops(block) if sch.get_sref(l) not in shared]


def bind_grid(sch: s_tir.Schedule, block) -> None:
    """Fuse the loops around an outer block into one grid axis (blockIdx.x)."""
    loops = sch.get_loops(block)
    sch.bind(sch.fuse(*loops) if len(loops) > 1 else loops[0], "blockIdx.x")


def bind_lanes(sch: s_tir.Schedule, block, loops: list, threads: int, unroll: bool = True) -> None:
    """Fuse `loops` (parallel, outermost first, adjacent) and spread them over `threads` lanes;
    the remaining outer part of the fused loop runs serially (unrolled when short)."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    outer, lane = sch.split(fused, factors=[None, threads])
    sch.bind(lane, "threadIdx.x")
    if unroll:
        sch.annotate(outer, "pragma_unroll_explicit", 0)
        sch.annotate(outer, "pragma_auto_unroll_max_step", 16)


def set_scope(sch: s_tir.Schedule, writer_name: str, buffer_name: str, scope: str) -> None:
    """Put the buffer `buffer_name`, written by block `writer_name`, in `scope`."""
    block = sch.get_sblock(writer_name)
    names = [str(region.source.name) for region in sch.get(block).writes]
    if buffer_name not in names:
        raise ValueError(f"block {writer_name!r} writes {names}, not {buffer_name!r}")
    sch.set_scope(block, names.index(buffer_name), scope)


def to_shared(sch: s_tir.Schedule, writers: dict[str, tuple[str, ...]]) -> None:
    """set_scope(..., "shared") for each writer block name -> names of buffers it writes."""
    for block_name, buffers in writers.items():
        for buffer_name in buffers:
            set_scope(sch, block_name, buffer_name, "shared")


def chunk_for(rows: int, cols: int, threads: int) -> int | None:
    """Columns per lane for a register accumulator [rows, cols] spread over at most `threads`
    lanes: the smallest divisor c of `cols` with rows * cols / c <= threads (None when even one
    lane per row is too many: more rows than lanes)."""
    return next((c for c in range(1, cols + 1)
                 if cols % c == 0 and rows * (cols // c) <= threads), None)


def bind_accumulator(sch: s_tir.Schedule, loops: list, serial: list, threads: int,
                     chunk: int) -> None:
    """Lanes over (row, column chunk) of a register accumulator acc[row, col]: each lane owns
    `chunk` adjacent columns of one row, the `serial` loops (a reduction) and its chunk inside.
    Every lane index is a plain function of threadIdx.x, so TVM compacts the accumulator to the
    lane's own `chunk` (per row loop) registers; a lane mapping through an outer serial part of a
    fused loop would keep the whole tile per lane (local memory)."""
    *rows, col = [l for l in loops if sch.get_sref(l) not in {sch.get_sref(s) for s in serial}]
    col_outer, col_inner = sch.split(col, factors=[None, chunk])
    sch.reorder(*rows, col_outer, *serial, col_inner)
    fused = sch.fuse(*rows, col_outer) if rows else col_outer
    _, lane = sch.split(fused, factors=[None, threads])
    sch.bind(lane, "threadIdx.x")
    sch.unroll(col_inner)  # constant register indices (else sm_100/120 put the array in memory)


def schedule_children(sch: s_tir.Schedule, outer, threads: int,
                      accumulators: dict[str, tuple] | None = None) -> None:
    """Bind `outer` to the grid and each child block to the lanes: all of a child's own loops
    fused and spread over the lanes, except the children in `accumulators`, name -> (indices
    into its own loops of the loops kept serial inside a lane (a reduction), column chunk), that
    touch a register accumulator (`bind_accumulator`). A child with no own loops runs in every
    lane (uniform scalar work into registers)."""
    bind_grid(sch, outer)
    children = sch.get_child_blocks(outer)
    accumulators = accumulators or {}
    for child in children:
        name = sch.get(child).name_hint
        loops = own_loops(sch, child, children)
        if not loops:
            continue
        if name in accumulators:
            serial_idx, chunk = accumulators[name]
            bind_accumulator(sch, loops, [loops[i] for i in serial_idx], threads, chunk)
        else:
            bind_lanes(sch, child, loops, threads)
