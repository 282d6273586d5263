"""Shared by the kernel property tests: compiled-kernel cache, tolerances per dtype, and the
"pocl" pseudo-variant: the kernel built with the CUDA knobs, scheduled by the default CUDA rule
for sm_90 (the exact TIR the CUDA path compiles), lowered to OpenCL C and run on pocl's CPU
device. Every property test that takes a variant also runs it, so each CUDA schedule is checked
against the same reference twin, inputs and tolerances as the CPU schedules."""

from __future__ import annotations

import functools

import pytest
import torch

from hymba_compile.build import build_kernel
from hymba_compile.pocl import build_pocl_kernel, pocl_unavailable_reason
from hymba_compile.schedules import named_target
from hymba_compile.schedules.options import builder_options

POCL = "pocl"
CUDA_TARGET = "cuda:sm_90"
_POCL_MISSING = pocl_unavailable_reason()
needs_pocl = pytest.mark.skipif(_POCL_MISSING is not None,
                                reason=f"CUDA schedules on OpenCL need pocl: {_POCL_MISSING}")


def with_pocl(names) -> list:
    """A variant list plus the pocl pseudo-variant (skipped, saying why, without pocl)."""
    return [*names, pytest.param(POCL, marks=needs_pocl)]

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Tolerances per output dtype. float32: both sides compute in fp32 with different summation
# orders; errors of a few ulp times the reduction length, ~1e-5 at our sizes. bfloat16 outputs:
# one rounding step of bf16 is 2^-8 relative, and a 1-ulp difference arises whenever the fp32
# values on the two sides fall on opposite sides of a rounding boundary, so rtol = 2^-7.
TOLERANCES = {"float32": dict(rtol=1e-5, atol=1e-5), "bfloat16": dict(rtol=2**-7, atol=2**-7)}


@functools.lru_cache(maxsize=256)
def cached_kernel(builder, args: tuple, variant: str | None, options_from=None):
    """build_kernel(builder(*args), variant=variant), memoised across hypothesis examples.
    variant POCL: builder(*args, **CUDA knobs) (the knobs of `options_from`'s family when the
    builder is a test's wrapper) as the CUDA path builds it, run on pocl."""
    if variant == POCL:
        target = named_target(CUDA_TARGET)
        options = builder_options(options_from or builder, target, args)
        return build_pocl_kernel(builder(*args, **options), CUDA_TARGET)
    return build_kernel(builder(*args), variant=variant)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: str, scale: float = 1.0):
    """Compare with the dtype's tolerance (atol scaled by `scale` for large-magnitude outputs)."""
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), rtol=tol["rtol"],
                               atol=tol["atol"] * scale)
