"""CUDA rules for the causal conv1d (ir/conv.py). Prefill: every output element (and every
element of the new state) a lane, its K taps read straight from global memory (consecutive
lanes read consecutive channels: coalesced). Decode step: a lane per (row, channel), the K taps
and the in-place state shift serial in the lane."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule

THREADS = 256


@cuda_rule("causal_conv1d", "element_lanes")
def conv_element_lanes(func, target):
    """y [b, L, C] and state [b, K, C]: one kernel each; a thread block per (row, 256 channels):
    rows (batch x tokens, symbolic) on blockIdx.x, channel blocks on blockIdx.y, so no lane
    divides by the symbolic length. Each lane sums its K taps into a register ("taps") and
    applies SiLU to that. (dlight's fallback kept a tile of taps per thread and spilled.)"""
    sch = s_tir.Schedule(func)
    taps = sch.get_sblock("taps")
    for name in ("y", "state"):
        block = sch.get_sblock(name)
        b, r, c = sch.get_loops(block)
        cb, lane = sch.split(c, factors=[None, THREADS])
        sch.bind(sch.fuse(b, r), "blockIdx.x")
        sch.bind(cb, "blockIdx.y")
        sch.bind(lane, "threadIdx.x")
        if name == "y":
            sch.compute_at(taps, lane)
            sch.set_scope(taps, 0, "local")
    return sch


@cuda_rule("causal_conv1d_step", "channel_lanes")
def step_channel_lanes(func, target):
    """(row, channel) pairs over blocks of 256 lanes; each lane reads its K-1 old state entries,
    writes y and shifts its state column (no two lanes touch the same element)."""
    sch = s_tir.Schedule(func, enable_check=False)
    b, c = sch.get_loops(sch.get_sblock("step"))
    blk, lane = sch.split(sch.fuse(b, c), factors=[None, THREADS])
    sch.bind(blk, "blockIdx.x")
    sch.bind(lane, "threadIdx.x")
    return sch
