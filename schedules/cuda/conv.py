"""CUDA rules for the causal conv1d (ir/conv.py). Prefill: every output element (and every
element of the new state) a lane, its K taps read straight from global memory (consecutive
lanes read consecutive channels: coalesced). Decode step: a lane per (row, channel), the K taps
and the in-place state shift serial in the lane."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule
from .common import bind_injective

THREADS = 256


@cuda_rule("causal_conv1d", "element_lanes")
def conv_element_lanes(func, target):
    """y [b, L, C] and state [b, K, C]: one kernel each, an element per lane. (dlight's
    fallback kept a tile of taps per thread and spilled 168-632 bytes on every arch.)"""
    sch = s_tir.Schedule(func)
    for name in ("y", "state"):
        bind_injective(sch, sch.get_sblock(name), THREADS)
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
