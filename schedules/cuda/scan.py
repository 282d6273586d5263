"""CUDA rules for the selective scans (ir/scan.py): one thread per channel, its d_state states in
registers, one thread block per (batch row, channel tile [, chunk]).

The ir/ scans keep a channel tile's state h[N, tile] in a scratch buffer and loop over the tile's
channels innermost in every step; here those channel loops become the block's lanes (the tile is
the block size), so each lane owns one channel and its N states, A entries and step values as
registers, and the steps, the N states and the C.h dot product run serially inside the lane: no
barrier and no shared memory anywhere. The chunked scan's three passes become three kernels
(per-chunk scans in parallel over chunks, the serial pass over chunk states, the re-scan emitting
y), its chunk states living in global scratch between them."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule
from .common import bind_grid, own_loops


def _lane_per_channel(sch: s_tir.Schedule, outer_name: str) -> None:
    """Outer block -> grid; every child's innermost (channel) loop -> threadIdx.x, extent = the
    channel tile; the other loops of a child (the states) stay serial and are unrolled."""
    outer = sch.get_sblock(outer_name)
    bind_grid(sch, outer)
    children = sch.get_child_blocks(outer)
    for child in children:
        loops = own_loops(sch, child, children)
        sch.bind(loops[-1], "threadIdx.x")
        for loop in loops[:-1]:
            sch.unroll(loop)


@cuda_rule("selective_scan", "channel_lanes")
def scan_channel_lanes(func, target):
    """Sequential scan: a lane per channel walks all L steps."""
    sch = s_tir.Schedule(func, enable_check=False)
    _lane_per_channel(sch, "scan")
    return sch


@cuda_rule("selective_scan_chunked", "channel_lanes")
def chunked_channel_lanes(func, target):
    """Chunked scan: three kernels, each a lane per channel; passes 1 and 3 over every chunk."""
    sch = s_tir.Schedule(func, enable_check=False)
    for outer in ("chunk_scan", "chunk_pass", "chunk_out"):
        _lane_per_channel(sch, outer)
    return sch


@cuda_rule("selective_state_update", "channel_lanes")
def update_channel_lanes(func, target):
    """Decode step: a lane per channel advances its N states in registers (read once, written
    once) and forms y."""
    sch = s_tir.Schedule(func, enable_check=False)
    _lane_per_channel(sch, "update")
    return sch
