"""Causal conv1d + SiLU cases at Hymba-1.5B size (d_inner 3200, width 4): the prefill conv over a
1024-token prompt (baseline: reference.causal_conv1d, i.e. F.conv1d + F.silu on its own [b, C, T]
layout, given pre-transposed so it pays no transpose) and the decode step (memory bound)."""

from __future__ import annotations

import torch

from hymba_compile.ir.conv import causal_conv1d, causal_conv1d_step

from ...build import build_kernel, knobbed
from ...reference import causal_conv1d as conv_ref
from ...reference import causal_conv1d_step as step_ref
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes

CHANNELS, WIDTH = 3200, 4


def _prefill(n: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        x = torch.randn(1, n, CHANNELS).to(t)  # ours: channels-last, as in_proj writes it
        x_ref = x.transpose(1, 2).contiguous()  # the reference's [b, C, T]
        w, bias = torch.randn(CHANNELS, 1, WIDTH).to(t), torch.randn(CHANNELS).to(t)
        w_kc = w[:, 0, :].t().contiguous()  # ours: taps-major [K, C]
        y, state = torch.empty_like(x), torch.empty(1, WIDTH, CHANNELS, dtype=t)
        k = build_kernel(knobbed(causal_conv1d, CHANNELS, WIDTH, dtype))
        return Prepared(ours=lambda: (k(x, w_kc, bias, y, state), y.transpose(1, 2))[1],
                        baseline=lambda: conv_ref(x_ref, w, bias))

    def bytes_moved() -> int:  # x, w, bias in; y and the last K inputs (the new state) out
        return nbytes(dtype, 2 * n * CHANNELS, WIDTH * CHANNELS, CHANNELS, WIDTH * CHANNELS)

    def flops() -> int:  # K multiply-adds and the bias per output, SiLU (exp, add, divide)
        return (2 * WIDTH + 1 + 3) * n * CHANNELS
    return KernelCase("conv1d_prefill", f"[1,{n},{CHANNELS}] k{WIDTH} {dtype}",
                      "reference.causal_conv1d (F.conv1d+silu)", setup, target={"ratio": 1},
                      kernels=(KernelCall(causal_conv1d, (CHANNELS, WIDTH, dtype),
                                          dims={"batch": 1, "n": 6}),),
                      bytes_moved=bytes_moved, flops=flops)


def _decode(batch: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        state_ref = torch.randn(batch, CHANNELS, WIDTH).to(t)  # the reference's [b, C, K]
        state = state_ref.transpose(1, 2).contiguous()  # ours [b, K, C], a separate copy
        x = torch.randn(batch, CHANNELS).to(t)
        w, bias = torch.randn(CHANNELS, 1, WIDTH).to(t), torch.randn(CHANNELS).to(t)
        w_kc = w[:, 0, :].t().contiguous()
        y = torch.empty_like(x)
        k = build_kernel(knobbed(causal_conv1d_step, CHANNELS, WIDTH, dtype))
        # ours advances its own state copy in place at every call (the baseline returns a new
        # one); the first calls of both sides start from the same state
        return Prepared(ours=lambda: (k(state, x, w_kc, bias, y), y)[1],
                        baseline=lambda: step_ref(state_ref, x, w, bias)[0])

    def bytes_moved() -> int:  # state in and out (in place), x, w, bias in, y out
        return nbytes(dtype, 2 * batch * WIDTH * CHANNELS, 2 * batch * CHANNELS,
                      WIDTH * CHANNELS, CHANNELS)

    def flops() -> int:
        return (2 * WIDTH + 1 + 3) * batch * CHANNELS
    return KernelCase("conv1d_decode", f"b{batch} state [{batch},{CHANNELS},{WIDTH}] {dtype}",
                      "reference.causal_conv1d_step", setup, memory_bound=True,
                      target={"ratio": 1},
                      kernels=(KernelCall(causal_conv1d_step, (CHANNELS, WIDTH, dtype),
                                          dims={"nb": batch}),),
                      bytes_moved=bytes_moved, flops=flops)


def cases() -> list[KernelCase]:
    return [_prefill(1024, "float32"), _prefill(1024, "bfloat16"),
            _decode(1, "float32"), _decode(1, "bfloat16")]
