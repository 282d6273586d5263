"""Linear cases at Hymba-1.5B sizes: decode GEMVs (memory bound: the weight is read once per
call) and the prefill GEMM of in_proj at 1152 rows (128 meta + 1024 prompt tokens).

Baselines: fp32 weights -> `reference.linear` (F.linear in fp32). bf16 weights -> eager torch's
native bf16 F.linear (x cast to bf16, the fastest eager path for bf16 weights; the reference's
own path re-widens the whole weight to fp32 on every call and is ~20x slower). Our kernels keep
x in fp32, so max_abs_err of the bf16 cases reflects the baseline's bf16 rounding of x and y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hymba_compile.ir.linear import SHAPES, gemv, matmul

from ...build import build_kernel, knobbed
from ...reference import linear
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes

PREFILL_ROWS = 1152


def _gemv(name: str, proj: str, dtype: str, batch: int = 1, variant: str | None = None):
    n, k = SHAPES[proj]

    def setup() -> Prepared:
        x = torch.randn(batch, k)
        w = (torch.randn(n, k) * k ** -0.5).to(DTYPES[dtype])
        y = torch.empty(batch, n)
        kern = build_kernel(knobbed(gemv, batch, n, k, dtype), variant=variant)
        if dtype == "float32":
            baseline = lambda: linear(x, w)  # noqa: E731
        else:
            xb = x.to(w.dtype)
            baseline = lambda: F.linear(xb, w)  # noqa: E731
        return Prepared(ours=lambda: (kern(x, w, y), y)[1], baseline=baseline)

    def bytes_moved() -> int:  # the weight in `dtype`; x in and y out in fp32
        return nbytes(dtype, n * k) + nbytes("float32", batch * k, batch * n)

    def flops() -> int:
        return 2 * batch * n * k

    base = "reference.linear" if dtype == "float32" else "F.linear bf16"
    return KernelCase(name, f"b{batch} x {n}x{k} {dtype}" + (f" [{variant}]" if variant else ""),
                      base, setup, memory_bound=True,
                      target={"gbps_of_peak": 0.8}
                      if batch == 1 and proj in ("in_proj", "ffn_up", "ffn_down") else {},
                      kernels=(KernelCall(gemv, (batch, n, k, dtype),
                                          small_args=(batch, 96, 160, dtype)),),
                      bytes_moved=bytes_moved, flops=flops, variant=variant)


def _matmul(name: str, proj: str, dtype: str, rows: int = PREFILL_ROWS, variant: str | None = None):
    n, k = SHAPES[proj]

    def setup() -> Prepared:
        x = torch.randn(rows, k)
        w = (torch.randn(n, k) * k ** -0.5).to(DTYPES[dtype])
        y = torch.empty(rows, n)
        kern = build_kernel(knobbed(matmul, n, k, dtype), variant=variant)
        wf = w.float()
        return Prepared(ours=lambda: (kern(x, w, y), y)[1], baseline=lambda: torch.matmul(x, wf.T))

    def bytes_moved() -> int:
        return nbytes(dtype, n * k) + nbytes("float32", rows * k, rows * n)

    def flops() -> int:
        return 2 * rows * n * k

    shape = f"{rows}x{k} @ ({n}x{k})^T {dtype}" + (f" [{variant}]" if variant else "")
    return KernelCase(name, shape, "torch.matmul fp32", setup, target={"ratio": 0.7},
                      kernels=(KernelCall(matmul, (n, k, dtype), small_args=(96, 160, dtype),
                                          dims={"m": 37}),),
                      bytes_moved=bytes_moved, flops=flops, variant=variant)


def cases() -> list[KernelCase]:
    return [_gemv("gemv_in_proj_fp32", "in_proj", "float32"),
            _gemv("gemv_in_proj_bf16", "in_proj", "bfloat16"),
            _gemv("gemv_in_proj_bf16_b8", "in_proj", "bfloat16", batch=8),
            _gemv("gemv_ffn_up_bf16", "ffn_up", "bfloat16"),
            _gemv("gemv_ffn_down_bf16", "ffn_down", "bfloat16"),
            _gemv("gemv_out_proj_bf16", "out_proj", "bfloat16"),
            _gemv("gemv_x_proj_bf16", "x_proj", "bfloat16"),
            _gemv("gemv_dt_proj_bf16", "dt_proj", "bfloat16"),
            _gemv("gemv_lm_head_bf16", "lm_head", "bfloat16"),
            _matmul("matmul_in_proj", "in_proj", "float32")]
