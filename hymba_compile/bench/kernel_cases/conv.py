"""Causal conv1d + SiLU cases at Hymba-1.5B size (d_inner 3200, width 4): the prefill conv over a
1024-token prompt (baseline: reference.causal_conv1d, i.e. F.conv1d + F.silu on its own [b, C, T]
layout, given pre-transposed so it pays no transpose) and the decode step (memory bound)."""

from __future__ import annotations

import torch

from ir.conv import causal_conv1d, causal_conv1d_step

from ...build import build_kernel
from ...reference import causal_conv1d as conv_ref
from ...reference import causal_conv1d_step as step_ref
from ..kernels import DTYPES, KernelCase, Prepared

CHANNELS, WIDTH = 3200, 4


def _prefill(n: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        x = torch.randn(1, n, CHANNELS).to(t)  # ours: channels-last, as in_proj writes it
        x_ref = x.transpose(1, 2).contiguous()  # the reference's [b, C, T]
        w, bias = torch.randn(CHANNELS, 1, WIDTH).to(t), torch.randn(CHANNELS).to(t)
        w_kc = w[:, 0, :].t().contiguous()  # ours: taps-major [K, C]
        y, state = torch.empty_like(x), torch.empty(1, WIDTH, CHANNELS, dtype=t)
        k = build_kernel(causal_conv1d(CHANNELS, WIDTH, dtype))
        return Prepared(ours=lambda: (k(x, w_kc, bias, y, state), y.transpose(1, 2))[1],
                        baseline=lambda: conv_ref(x_ref, w, bias))
    return KernelCase("conv1d_prefill", f"[1,{n},{CHANNELS}] k{WIDTH} {dtype}",
                      "reference.causal_conv1d (F.conv1d+silu)", setup, target={"ratio": 1})


def _decode(batch: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        state_ref = torch.randn(batch, CHANNELS, WIDTH).to(t)  # the reference's [b, C, K]
        state = state_ref.transpose(1, 2).contiguous()  # ours [b, K, C], a separate copy
        x = torch.randn(batch, CHANNELS).to(t)
        w, bias = torch.randn(CHANNELS, 1, WIDTH).to(t), torch.randn(CHANNELS).to(t)
        w_kc = w[:, 0, :].t().contiguous()
        y = torch.empty_like(x)
        k = build_kernel(causal_conv1d_step(CHANNELS, WIDTH, dtype))
        size = x.element_size()
        # ours advances its own state copy in place at every call (the baseline returns a new
        # one); the first calls of both sides start from the same state
        return Prepared(ours=lambda: (k(state, x, w_kc, bias, y), y)[1],
                        baseline=lambda: step_ref(state_ref, x, w, bias)[0],
                        bytes_moved=(2 * state.numel() + 2 * x.numel() + w.numel() + bias.numel())
                        * size)
    return KernelCase("conv1d_decode", f"b{batch} state [{batch},{CHANNELS},{WIDTH}] {dtype}",
                      "reference.causal_conv1d_step", setup, memory_bound=True,
                      target={"ratio": 1})


def cases() -> list[KernelCase]:
    return [_prefill(1024, "float32"), _prefill(1024, "bfloat16"),
            _decode(1, "float32"), _decode(1, "bfloat16")]
