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

from typing import Sequence

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


def move_inside(sch: s_tir.Schedule, loops: list, serial: list) -> list:
    """Reorder so that the `serial` loops (a reduction) are innermost; returns the other loops
    in their order. `loops` are the block's own loops, outermost first."""
    keep = [l for l in loops if sch.get_sref(l) not in {sch.get_sref(s) for s in serial}]
    if serial:
        sch.reorder(*keep, *serial)
    return keep


def set_scope(sch: s_tir.Schedule, writer_name: str, scope: str, index: int = 0) -> None:
    """Put the `index`-th buffer written by block `writer_name` in `scope` ("shared"/"local")."""
    sch.set_scope(sch.get_sblock(writer_name), index, scope)


def schedule_children(sch: s_tir.Schedule, outer, threads: int, plan: dict[str, tuple]) -> None:
    """Bind `outer` to the grid and each child block to the lanes by `plan`:
    name -> (number of own loops spread over lanes (outermost first), names of those to keep
    serial innermost... given as indices into the own loops). A child not in `plan` has all its
    own loops spread over the lanes; one with no own loops runs in every lane (uniform scalar
    work into registers)."""
    bind_grid(sch, outer)
    children = sch.get_child_blocks(outer)
    for child in children:
        name = sch.get(child).name_hint
        loops = own_loops(sch, child, children)
        if not loops:
            continue
        serial_idx = plan.get(name, ())
        serial = [loops[i] for i in serial_idx]
        par = move_inside(sch, loops, serial)
        if par:
            bind_lanes(sch, child, par, threads)
