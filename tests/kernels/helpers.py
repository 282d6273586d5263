"""Shared by the kernel property tests: compiled-kernel cache, tolerances per dtype."""

from __future__ import annotations

import functools

import torch

from hymba_compile.build import build_kernel

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Tolerances per output dtype. float32: both sides compute in fp32 with different summation
# orders; errors of a few ulp times the reduction length, ~1e-5 at our sizes. bfloat16 outputs:
# one rounding step of bf16 is 2^-8 relative, and a 1-ulp difference arises whenever the fp32
# values on the two sides fall on opposite sides of a rounding boundary, so rtol = 2^-7.
TOLERANCES = {"float32": dict(rtol=1e-5, atol=1e-5), "bfloat16": dict(rtol=2**-7, atol=2**-7)}


@functools.lru_cache(maxsize=256)
def cached_kernel(builder, args: tuple, variant: str | None):
    """build_kernel(builder(*args), variant=variant), memoised across hypothesis examples."""
    return build_kernel(builder(*args), variant=variant)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: str, scale: float = 1.0):
    """Compare with the dtype's tolerance (atol scaled by `scale` for large-magnitude outputs)."""
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), rtol=tol["rtol"],
                               atol=tol["atol"] * scale)
