"""RMSNorm cases at Hymba-1.5B width (1600; 3200 for the pre-average norms)."""

from __future__ import annotations

import torch

from hymba_compile.ir.norm import add_rmsnorm, rmsnorm

from ...build import build_kernel, knobbed
from ...reference import add_rms_norm, rms_norm
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes


def _rmsnorm(rows: int, dim: int, dtype: str, variant: str | None = None):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        x, w = torch.randn(rows, dim).to(t), torch.randn(dim).to(t)
        y = torch.empty_like(x)
        k = build_kernel(knobbed(rmsnorm, dim, dtype), variant=variant)
        return Prepared(ours=lambda: (k(x, w, y), y)[1], baseline=lambda: rms_norm(x, w, 1e-6))

    def bytes_moved() -> int:  # x, w in; y out
        return nbytes(dtype, 2 * rows * dim, dim)

    def flops() -> int:  # square + add, scale by rsqrt, times w (per element)
        return 4 * rows * dim
    shown = f" [{variant}]" if variant else ""
    return KernelCase("rmsnorm", f"{rows}x{dim} {dtype}{shown}", "reference.rms_norm", setup,
                      memory_bound=True, target={"ratio": 1.0},
                      kernels=(KernelCall(rmsnorm, (dim, dtype), dims={"n": 3}),),
                      bytes_moved=bytes_moved, flops=flops, variant=variant)


def _add_rmsnorm(rows: int, dim: int, dtype: str, variant: str | None = None):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        x, r, w = torch.randn(rows, dim).to(t), torch.randn(rows, dim).to(t), torch.randn(dim).to(t)
        h, y = torch.empty_like(x), torch.empty_like(x)
        k = build_kernel(knobbed(add_rmsnorm, dim, dtype), variant=variant)
        return Prepared(ours=lambda: (k(x, r, w, h, y), y)[1],
                        baseline=lambda: add_rms_norm(x, r, w, 1e-6)[1])

    def bytes_moved() -> int:  # x, residual, w in; h, y out
        return nbytes(dtype, 4 * rows * dim, dim)

    def flops() -> int:  # the add, then the norm's 4
        return 5 * rows * dim
    shown = f" [{variant}]" if variant else ""
    return KernelCase("add_rmsnorm", f"{rows}x{dim} {dtype}{shown}", "reference.add_rms_norm", setup,
                      memory_bound=True, target={"ratio": 1.0},
                      kernels=(KernelCall(add_rmsnorm, (dim, dtype), dims={"n": 3}),),
                      bytes_moved=bytes_moved, flops=flops, variant=variant)


def cases() -> list[KernelCase]:
    """Prefill (128 meta + 1024 tokens) and decode (one row), in both dtypes; decode also with
    the serial variant (no thread-pool launch)."""
    return [_rmsnorm(rows, 1600, dtype) for rows in (1152, 1) for dtype in ("float32", "bfloat16")] + \
        [_rmsnorm(1, 1600, "bfloat16", "rows_serial")] + \
        [_add_rmsnorm(rows, 1600, dtype) for rows in (1152, 1) for dtype in ("float32", "bfloat16")] + \
        [_add_rmsnorm(1, 1600, "bfloat16", "rows_serial")]
