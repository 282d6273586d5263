"""RMSNorm kernels (ir/norm.py) against reference.rms_norm / reference.add_rms_norm, for every
CPU schedule variant."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hymba_compile.reference import add_rms_norm, rms_norm
from hymba_compile.ir.norm import add_rmsnorm, rmsnorm
from hymba_compile.schedules import named_target, variants
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
# Widths of Hymba's norms (16: B/C, 100: dt, 1600, 3200) plus 33, which no vector width divides.
DIMS = st.sampled_from([16, 33, 100, 160, 1600, 3200])
# Tolerances (helpers.TOLERANCES): both sides compute the statistics in fp32 in different
# summation orders (a few ulp); for bf16 the kernel rounds exactly where the twin does (y, then
# y * w), so the outputs differ only where an ulp-level difference in y crosses a bf16 rounding
# boundary: one bf16 ulp, relative 2^-8 at most. atol x4: outputs reach a few units.


@pytest.mark.parametrize("variant", with_pocl(variants("rmsnorm", CPU)))
@settings(max_examples=12, deadline=None)
@given(dim=DIMS, rows=st.integers(1, 40), dtype=st.sampled_from(["float32", "bfloat16"]),
       seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_rmsnorm(variant, dim, rows, dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, dim, generator=g) * scale).to(TORCH_DTYPES[dtype])
    w = torch.randn(dim, generator=g).to(TORCH_DTYPES[dtype])
    y = torch.empty_like(x)
    cached_kernel(rmsnorm, (dim, dtype), variant)(x, w, y)
    assert_close(y, rms_norm(x, w, 1e-6), dtype, scale=4.0)


@pytest.mark.parametrize("variant", with_pocl(variants("add_rmsnorm", CPU)))
@settings(max_examples=10, deadline=None)
@given(dim=DIMS, rows=st.integers(1, 40), dtype=st.sampled_from(["float32", "bfloat16"]),
       seed=st.integers(0, 2**16))
def test_add_rmsnorm(variant, dim, rows, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x, r = (torch.randn(2, rows, dim, generator=g)).to(TORCH_DTYPES[dtype])
    w = torch.randn(dim, generator=g).to(TORCH_DTYPES[dtype])
    h, y = torch.empty_like(x), torch.empty_like(x)
    cached_kernel(add_rmsnorm, (dim, dtype), variant)(x, r, w, h, y)
    h_ref, y_ref = add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(h, h_ref)
    assert_close(y, y_ref, dtype, scale=4.0)
