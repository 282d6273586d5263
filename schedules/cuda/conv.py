"""CUDA rule for the causal conv1d decode step (ir/conv.py): a lane per (row, channel), the K
taps and the in-place state shift serial in the lane. The prefill conv is injective and goes
through dlight's GPU rules."""

from __future__ import annotations

from tvm import s_tir

from ..registry import cuda_rule

THREADS = 256


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
