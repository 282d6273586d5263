"""Linear kernels (ir/linear.py: gemv for decode, matmul for prefill) against reference.linear,
for every CPU schedule variant, fp32 and bf16 weights.

Tolerance: the output is fp32 for both weight dtypes, and reference.linear widens a bf16 weight
to fp32 exactly before its fp32 F.linear, so both sides sum the same fp32 products and differ
only in summation order: float32 tolerances, with atol scaled by k / 100 (the rounding error of
a k-term fp32 sum grows ~k * 2^-24 * mean|x w|; with unit x and w ~ N(0, 1/k) the terms are
O(k^-1/2), which this bounds with a 3x margin at the drawn sizes).

Shapes are small and drawn from few values (compiled kernels are cached across examples); they
include batch 1 and 8, m = 1, and n and k that are not multiples of the vector width.
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hymba_compile.reference import linear
from hymba_compile.ir.linear import gemv, matmul
from hymba_compile.schedules import named_target, variants
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
# (n_out, k): vector-width multiples, odd n, k with a tail, and the x_proj/dt_proj-like aspect
SHAPES = st.sampled_from([(64, 128), (37, 100), (5, 129), (132, 48), (16, 7)])
DTYPES = st.sampled_from(["float32", "bfloat16"])


def _inputs(rows: int, n: int, k: int, dtype: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    w = (torch.randn(n, k, generator=g) * k ** -0.5).to(TORCH_DTYPES[dtype])
    return x, w, torch.full((rows, n), float("nan"))


def _check(y, x, w, k):
    assert_close(y, linear(x, w), "float32", scale=max(1.0, k / 100))


@pytest.mark.parametrize("variant", with_pocl([v for v in variants("gemv", CPU) if v != "dlight"]))
@settings(max_examples=14, deadline=None)
@given(batch=st.sampled_from([1, 2, 3, 8, 16]), shape=SHAPES, dtype=DTYPES, seed=st.integers(0, 2**16))
@example(batch=1, shape=(64, 128), dtype="bfloat16", seed=0)
@example(batch=8, shape=(37, 100), dtype="bfloat16", seed=1)
@example(batch=8, shape=(5, 129), dtype="float32", seed=2)
def test_gemv(variant, batch, shape, dtype, seed):
    n, k = shape
    x, w, y = _inputs(batch, n, k, dtype, seed)
    cached_kernel(gemv, (batch, n, k, dtype), variant)(x, w, y)
    _check(y, x, w, k)


# dlight.cpu.GEMV unrolls its reduction up to 256 steps, so each build takes seconds: few
# examples, one shape with a k tail and one without.
@settings(max_examples=4, deadline=None)
@given(shape=st.sampled_from([(37, 100), (16, 64)]), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_gemv_dlight(shape, dtype, seed):
    """TVM's stock rule, batch 1 only: it recognises a GEMV only when x is a vector."""
    n, k = shape
    x, w, y = _inputs(1, n, k, dtype, seed)
    cached_kernel(gemv, (1, n, k, dtype), "dlight")(x, w, y)
    _check(y, x, w, k)


def test_gemv_dlight_declines_batch():
    """For batch > 1 the dlight variant reports that it does not apply (no silent fallback)."""
    with pytest.raises(ValueError, match="does not apply"):
        cached_kernel(gemv, (2, 16, 32, "float32"), "dlight")


@pytest.mark.parametrize("variant", with_pocl(variants("matmul", CPU)))
@settings(max_examples=14, deadline=None)
@given(rows=st.sampled_from([1, 3, 4, 17, 40]), shape=SHAPES, dtype=DTYPES,
       seed=st.integers(0, 2**16))
@example(rows=1, shape=(64, 128), dtype="float32", seed=0)
@example(rows=17, shape=(37, 100), dtype="bfloat16", seed=1)
def test_matmul(variant, rows, shape, dtype, seed):
    n, k = shape
    x, w, y = _inputs(rows, n, k, dtype, seed)
    kernel = cached_kernel(matmul, (n, k, dtype), variant)
    kernel(x, w, y)
    _check(y, x, w, k)
    # the same compiled kernel serves every row count (m is symbolic)
    x2, _, y2 = _inputs(rows + 5, n, k, dtype, seed + 1)
    kernel(x2, w, y2)
    _check(y2, x2, w, k)


@pytest.mark.parametrize("builder,args", [
    (gemv, (0, 4, 4, "float32")), (gemv, (17, 4, 4, "float32")),
    (matmul, (4, 4, "float16")), (matmul, (0, 4, "float32"))])
def test_rejects_bad_arguments(builder, args):
    with pytest.raises(ValueError):
        builder(*args)
