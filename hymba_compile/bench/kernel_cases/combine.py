"""SwiGLU FFN and hybrid-combine cases at Hymba-1.5B sizes (d_model 1600, d_inner 3200,
d_ff 5504). Ours = the fused kernel(s) of ir/combine.py plus the following linear of
ir/linear.py, called back to back, against the eager reference function.

Decode cases use bf16 weights (the checkpoint dtype; memory bound, bytes = weights read) and
compare with the reference run in bf16 (activations cast to bf16: eager torch's native bf16
path). Prefill cases (1152 rows = 128 meta + 1024 prompt tokens) use fp32 weights against the
reference in fp32.
"""

from __future__ import annotations

import torch

from hymba_compile.ir.combine import D_FF, D_INNER, D_MODEL, EPS, gate_up_decode, gate_up_prefill, \
    hybrid_combine_decode, norm_average
from hymba_compile.ir.linear import gemv, matmul

from ...build import build_kernel, knobbed
from ...reference import hybrid_combine, swiglu
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes

PREFILL_ROWS = 1152


def _weight(n: int, k: int, dtype: str) -> torch.Tensor:
    return (torch.randn(n, k) * k ** -0.5).to(DTYPES[dtype])


def _swiglu(name: str, rows: int, dtype: str, decode: bool):
    def setup() -> Prepared:
        x = torch.randn(rows, D_MODEL)
        gw, uw = _weight(D_FF, D_MODEL, dtype), _weight(D_FF, D_MODEL, dtype)
        dw = _weight(D_MODEL, D_FF, dtype)
        h, y = torch.empty(rows, D_FF), torch.empty(rows, D_MODEL)
        if decode:
            k1 = build_kernel(knobbed(gate_up_decode, rows, D_MODEL, D_FF, dtype))
            k2 = build_kernel(knobbed(gemv, rows, D_MODEL, D_FF, dtype))
        else:
            k1 = build_kernel(knobbed(gate_up_prefill, D_MODEL, D_FF, dtype))
            k2 = build_kernel(knobbed(matmul, D_MODEL, D_FF, dtype))

        def ours():
            k1(x, gw, uw, h)
            k2(h, dw, y)
            return y

        xb = x.to(gw.dtype)
        return Prepared(ours=ours, baseline=lambda: swiglu(xb, gw, uw, dw))

    def bytes_moved() -> int:  # the three weights; x in, h out and back in, y out (fp32)
        return nbytes(dtype, 3 * D_FF * D_MODEL) + \
            nbytes("float32", rows * D_MODEL, 2 * rows * D_FF, rows * D_MODEL)

    def flops() -> int:  # three GEMMs and silu(gate) * up (exp, add, divide, multiply)
        return 6 * rows * D_FF * D_MODEL + 4 * rows * D_FF

    if decode:
        kernels = (KernelCall(gate_up_decode, (rows, D_MODEL, D_FF, dtype),
                              small_args=(rows, 64, 96, dtype)),
                   KernelCall(gemv, (rows, D_MODEL, D_FF, dtype), small_args=(rows, 64, 96, dtype)))
    else:
        kernels = (KernelCall(gate_up_prefill, (D_MODEL, D_FF, dtype), small_args=(64, 96, dtype),
                              dims={"m": 5}),
                   KernelCall(matmul, (D_MODEL, D_FF, dtype), small_args=(64, 96, dtype),
                              dims={"m": 5}))
    return KernelCase(name, f"{rows}x{D_MODEL} ffn {D_FF} {dtype}", f"reference.swiglu {dtype}",
                      setup, memory_bound=decode, kernels=kernels, bytes_moved=bytes_moved,
                      flops=flops)


def _combine(name: str, rows: int, dtype: str, decode: bool):
    def setup() -> Prepared:
        attn, ssm = torch.randn(rows, D_INNER), torch.randn(rows, D_INNER)
        w1 = (1 + 0.1 * torch.randn(D_INNER)).to(DTYPES[dtype])
        w2 = (1 + 0.1 * torch.randn(D_INNER)).to(DTYPES[dtype])
        ow = _weight(D_MODEL, D_INNER, dtype)
        fused, y = torch.empty(rows, D_INNER), torch.empty(rows, D_MODEL)
        if decode:
            k1 = build_kernel(knobbed(hybrid_combine_decode, rows, D_INNER, D_MODEL, dtype, EPS))
            ours = lambda: (k1(attn, ssm, w1, w2, ow, y), y)[1]  # noqa: E731
        else:
            k1 = build_kernel(knobbed(norm_average, D_INNER, dtype, EPS))
            k2 = build_kernel(knobbed(matmul, D_MODEL, D_INNER, dtype))

            def ours():
                k1(attn, ssm, w1, w2, fused)
                k2(fused, ow, y)
                return y

        ab, sb = attn.to(ow.dtype), ssm.to(ow.dtype)
        return Prepared(ours=ours, baseline=lambda: hybrid_combine(ab, sb, w1, w2, ow, EPS))

    def bytes_moved() -> int:  # attn, ssm (fp32), both norm weights and out_proj in; y out
        # (prefill: the fused activations out of the first kernel and into the second, too)
        fused = 0 if decode else 2 * rows * D_INNER
        return nbytes(dtype, 2 * D_INNER, D_MODEL * D_INNER) + \
            nbytes("float32", 2 * rows * D_INNER, fused, rows * D_MODEL)

    def flops() -> int:  # two RMSNorms (4 each) and their average (2), then the GEMM
        return 10 * rows * D_INNER + 2 * rows * D_MODEL * D_INNER

    if decode:
        kernels = (KernelCall(hybrid_combine_decode, (rows, D_INNER, D_MODEL, dtype, EPS),
                              small_args=(rows, 128, 64, dtype, EPS)),)
    else:
        kernels = (KernelCall(norm_average, (D_INNER, dtype, EPS), small_args=(128, dtype, EPS),
                              dims={"m": 3}),
                   KernelCall(matmul, (D_MODEL, D_INNER, dtype), small_args=(64, 128, dtype),
                              dims={"m": 5}))
    return KernelCase(name, f"{rows}x{D_INNER} -> {D_MODEL} {dtype}",
                      f"reference.hybrid_combine {dtype}", setup, memory_bound=decode,
                      kernels=kernels, bytes_moved=bytes_moved, flops=flops)


def cases() -> list[KernelCase]:
    return [_swiglu("swiglu_decode", 1, "bfloat16", True),
            _swiglu("swiglu_decode_b8", 8, "bfloat16", True),
            _swiglu("swiglu_prefill", PREFILL_ROWS, "float32", False),
            _combine("hybrid_combine_decode", 1, "bfloat16", True),
            _combine("hybrid_combine_decode_b8", 8, "bfloat16", True),
            _combine("hybrid_combine_prefill", PREFILL_ROWS, "float32", False)]
