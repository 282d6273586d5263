"""RMSNorm cases at Hymba-1.5B width (1600; 3200 for the pre-average norms)."""

from __future__ import annotations

import torch

from ir.norm import add_rmsnorm, rmsnorm

from ...build import build_kernel
from ...reference import add_rms_norm, rms_norm
from ..kernels import KernelCase, Prepared

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _rmsnorm(rows: int, dim: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        x, w = torch.randn(rows, dim).to(t), torch.randn(dim).to(t)
        y = torch.empty_like(x)
        k = build_kernel(rmsnorm(dim, dtype))
        size = x.element_size()
        return Prepared(ours=lambda: (k(x, w, y), y)[1], baseline=lambda: rms_norm(x, w, 1e-6),
                        bytes_moved=2 * x.numel() * size + w.numel() * size)
    return KernelCase("rmsnorm", f"{rows}x{dim} {dtype}", "reference.rms_norm", setup,
                      memory_bound=True)


def _add_rmsnorm(rows: int, dim: int, dtype: str):
    def setup() -> Prepared:
        t = DTYPES[dtype]
        x, r, w = torch.randn(rows, dim).to(t), torch.randn(rows, dim).to(t), torch.randn(dim).to(t)
        h, y = torch.empty_like(x), torch.empty_like(x)
        k = build_kernel(add_rmsnorm(dim, dtype))
        size = x.element_size()
        return Prepared(ours=lambda: (k(x, r, w, h, y), y)[1],
                        baseline=lambda: add_rms_norm(x, r, w, 1e-6)[1],
                        bytes_moved=4 * x.numel() * size + w.numel() * size)
    return KernelCase("add_rmsnorm", f"{rows}x{dim} {dtype}", "reference.add_rms_norm", setup,
                      memory_bound=True)


def cases() -> list[KernelCase]:
    return [_rmsnorm(1152, 1600, "float32"), _rmsnorm(1152, 1600, "bfloat16"),
            _rmsnorm(1, 1600, "float32"), _add_rmsnorm(1152, 1600, "float32")]
