"""Selective-scan cases at Hymba-1.5B size (d_inner 3200, d_state 16): prefill over 1024 tokens
(sequential and chunked), one decode state update, and the x_proj split + inner RMSNorms.
Baselines are the eager twins in reference.py, given their own [b, D, T] / [b, N, T] layouts
pre-transposed (so they pay no transposes); the reference prefill scan is a Python loop over t."""

from __future__ import annotations

import torch

from hymba_compile.ir.scan import selective_scan, selective_scan_chunked, selective_state_update, ssm_input_split

from ...build import build_kernel, knobbed
from ...reference import selective_scan as scan_ref
from ...reference import selective_state_update as update_ref
from ...reference import ssm_input_split as split_ref
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes

D_INNER, D_STATE, DT_RANK = 3200, 16, 100
# A < 0 (as -exp(A_log)) in the numerical checks: a positive A grows the state without bound
SMALL_RANGES = {"A": (-1.0, -0.05)}


def _step_flops(steps: int) -> int:
    """FLOPs of `steps` (row, channel) steps of the recurrence: per state, exp(delta A) (2),
    delta B u (1), h = dA h + dBu (2), y += C h (2); per channel, delta = softplus(delta + bias)
    (3), delta u (1), y + D u (2), y silu(z) (5)."""
    return steps * D_INNER * (7 * D_STATE + 11)


def _scan_bytes(rows: int, dtype: str) -> int:
    """u, delta, z, B, C in and y out in `dtype`; A, D, delta_bias in, the state in and out in
    fp32 (`rows` time steps of batch 1, or a batch of `rows` single steps)."""
    return nbytes(dtype, 4 * rows * D_INNER, 2 * rows * D_STATE) + \
        nbytes("float32", 3 * D_STATE * D_INNER, 2 * D_INNER)


def _weights(g):
    """(A [D, N] for the reference, A.T [N, D] for ours, D, delta_bias); A_log near Mamba's init."""
    A = -torch.exp(torch.log(torch.arange(1, D_STATE + 1, dtype=torch.float32)).repeat(D_INNER, 1)
                   + 0.1 * torch.randn(D_INNER, D_STATE, generator=g))
    return (A, A.t().contiguous(), torch.randn(D_INNER, generator=g),
            0.1 * torch.randn(D_INNER, generator=g))


def _prefill(name: str, builder, n: int, dtype: str, target: dict, **kw):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        g = torch.Generator().manual_seed(0)
        u, z = torch.randn(2, 1, n, D_INNER, generator=g).to(t)
        delta = (torch.randn(1, n, D_INNER, generator=g) - 2).to(t)
        B, C = torch.randn(2, 1, n, D_STATE, generator=g).to(t)
        A, A_nd, D, bias = _weights(g)
        h0 = 0.1 * torch.randn(1, D_STATE, D_INNER, generator=g)  # ours [b, N, D]
        h0_ref = h0.transpose(1, 2).contiguous()
        y, h = torch.empty_like(u), torch.empty_like(h0)
        ref_in = [v.transpose(1, 2).contiguous() for v in (u, delta, B, C, z)]
        k = build_kernel(knobbed(builder, D_INNER, D_STATE, dtype, **kw))
        return Prepared(
            ours=lambda: (k(u, delta, A_nd, B, C, D, z, bias, h0, y, h), y.transpose(1, 2))[1],
            baseline=lambda: scan_ref(ref_in[0], ref_in[1], A, ref_in[2], ref_in[3], D, ref_in[4],
                                      bias, h0_ref)[0])
    def bytes_moved() -> int:
        return _scan_bytes(n, dtype)

    def flops() -> int:  # the chunked scan scans every chunk twice (ir/scan.py)
        return _step_flops(n) * (2 if builder is selective_scan_chunked else 1)

    extra = "".join(f" {k}={v}" for k, v in kw.items())
    small_len = 2 * kw.get("chunk", 3) + 5  # crosses chunk boundaries, ends in a partial chunk
    return KernelCase(name, f"[1,{n},{D_INNER}] N{D_STATE} {dtype}{extra}",
                      "reference.selective_scan (eager loop)", setup, target=target,
                      kernels=(KernelCall(builder, (D_INNER, D_STATE, dtype), kw,
                                          small_args=(64, D_STATE, dtype),
                                          dims={"Bt": 1, "L": small_len},
                                          ranges=SMALL_RANGES),),
                      bytes_moved=bytes_moved, flops=flops)


def _decode(batch: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        g = torch.Generator().manual_seed(0)
        state_ref = 0.1 * torch.randn(batch, D_INNER, D_STATE, generator=g)
        state = state_ref.transpose(1, 2).contiguous()  # ours [b, N, D], a separate copy
        x, dt, z = torch.randn(3, batch, D_INNER, generator=g).to(t)
        B, C = torch.randn(2, batch, D_STATE, generator=g).to(t)
        A, A_nd, D, bias = _weights(g)
        y = torch.empty_like(x)
        k = build_kernel(knobbed(selective_state_update, D_INNER, D_STATE, dtype))
        # ours advances its own state copy in place at every call (the decay keeps it bounded);
        # the first calls of both sides start from the same state
        return Prepared(ours=lambda: (k(state, x, dt, A_nd, B, C, D, z, bias, y), y)[1],
                        baseline=lambda: update_ref(state_ref, x, dt, A, B, C, D, z, bias)[0])

    def bytes_moved() -> int:  # as the prefill scan, with a state per row in and out
        return _scan_bytes(batch, dtype) + nbytes("float32", 2 * (batch - 1) * D_STATE * D_INNER)

    def flops() -> int:
        return _step_flops(batch)
    return KernelCase("scan_decode", f"b{batch} state [{batch},{D_INNER},{D_STATE}] {dtype}",
                      "reference.selective_state_update", setup, memory_bound=True,
                      target={"ratio": 1},
                      kernels=(KernelCall(selective_state_update, (D_INNER, D_STATE, dtype),
                                          small_args=(64, D_STATE, dtype), dims={"Bt": 2},
                                          ranges=SMALL_RANGES),),
                      bytes_moved=bytes_moved, flops=flops)


def _split(rows: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        s = torch.randn(rows, DT_RANK + 2 * D_STATE).to(t)
        ws = [torch.randn(DT_RANK).to(t), torch.randn(D_STATE).to(t), torch.randn(D_STATE).to(t)]
        outs = [torch.empty(rows, DT_RANK, dtype=t), torch.empty(rows, D_STATE, dtype=t),
                torch.empty(rows, D_STATE, dtype=t)]
        k = build_kernel(knobbed(ssm_input_split, DT_RANK, D_STATE, dtype))
        return Prepared(ours=lambda: (k(s, *ws, *outs), outs[0])[1],
                        baseline=lambda: split_ref(s, DT_RANK, D_STATE, *ws, 1e-6)[0])
    width = DT_RANK + 2 * D_STATE

    def bytes_moved() -> int:  # s and the three norm weights in; dt, B, C out
        return nbytes(dtype, 2 * rows * width, width)

    def flops() -> int:  # three RMSNorms over the row's pieces
        return 4 * rows * width
    return KernelCase("ssm_input_split", f"[{rows},{DT_RANK}+2x{D_STATE}] {dtype}",
                      "reference.ssm_input_split", setup, memory_bound=True,
                      kernels=(KernelCall(ssm_input_split, (DT_RANK, D_STATE, dtype),
                                          dims={"rows": 3}),),
                      bytes_moved=bytes_moved, flops=flops)


def cases() -> list[KernelCase]:
    return [_prefill("scan_prefill", selective_scan, 1024, "float32", {"ratio": 20}),
            _prefill("scan_prefill", selective_scan, 1024, "bfloat16", {"ratio": 20}),
            _prefill("scan_prefill_chunked", selective_scan_chunked, 1024, "float32", {},
                     chunk=64),
            _decode(1, "float32"), _decode(1, "bfloat16"),
            _split(1024, "float32"), _split(1, "float32")]
