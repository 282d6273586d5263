"""Helpers shared by the CPU rules (not a rule file)."""

from __future__ import annotations

from tvm import s_tir, tirx


def set_loop_kind(sch: s_tir.Schedule, loop, kind: str) -> None:
    """Make `loop` parallel or vectorised without the compact-dataflow check of
    `sch.parallel` / `sch.vectorize`. That check refuses any block that reads and writes one
    buffer, which is what an in-place state update or a recurrence does; the caller asserts that
    the iterations of `loop` touch disjoint elements (different channels), which the check
    cannot see. The loop must be bound only to spatial block iterators."""
    kinds = {"parallel": tirx.ForKind.PARALLEL, "vectorize": tirx.ForKind.VECTORIZED}
    old = sch.get(loop)
    new = tirx.For(old.loop_var, old.min, old.extent, kinds[kind], old.body,
                   annotations=old.annotations)
    sch.state.replace(sch.get_sref(loop), new)


def lanes_for(extent: int, lanes: int = 16) -> int:
    """The largest power of two <= `lanes` that divides `extent` (so splits leave no tail)."""
    while extent % lanes:
        lanes //= 2
    return lanes
