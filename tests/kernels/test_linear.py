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
import tvm
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hymba_compile.reference import linear
from hymba_compile.ir.linear import gemv, matmul
from hymba_compile.schedules import named_target, variants
from hymba_compile.schedules.cpu.dot import has_bf16_dot
from hymba_compile.schedules.registry import schedule
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
DOT = "bf16dot"  # bf16 activations: its own twin and tests below
needs_bf16_dot = pytest.mark.skipif(
    not has_bf16_dot(CPU), reason=f"this CPU ({CPU.attrs.get('mcpu')}) has no avx512_bf16: the "
    "bf16dot kernels cannot run here (their fallback is tested below)")
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


@pytest.mark.parametrize("variant", with_pocl([v for v in variants("gemv", CPU)
                                                if v not in ("dlight", DOT)]))
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


@pytest.mark.parametrize("variant", with_pocl([v for v in variants("matmul", CPU) if v != DOT]))
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


# bf16dot: x rounded to bf16, then fp32 sums of exact bf16 x bf16 products. Twin: the
# reference linear of the rounded x (bf16 products are exact in fp32, so both sides sum the
# same fp32 terms in different orders: the float32 tolerance above). k a multiple of 32.
DOT_SHAPES = st.sampled_from([(64, 128), (37, 32), (5, 160), (132, 64), (3, 96)])


def _check_dot(y, x, w, k):
    assert_close(y, linear(x.to(torch.bfloat16).float(), w), "float32", scale=max(1.0, k / 100))


@needs_bf16_dot
@settings(max_examples=12, deadline=None)
@given(batch=st.sampled_from([1, 2, 3, 4, 8]), shape=DOT_SHAPES, rows=st.sampled_from([None, 1, 2, 4]),
       seed=st.integers(0, 2**16))
@example(batch=8, shape=(37, 32), rows=None, seed=1)
def test_gemv_bf16dot(batch, shape, rows, seed):
    n, k = shape
    x, w, y = _inputs(batch, n, k, "bfloat16", seed)
    func = gemv(batch, n, k, "bfloat16")
    knobs = {} if rows is None else {"rows": rows}
    mod, _ = schedule(func, CPU, DOT, knobs)
    tvm.compile(mod, target=CPU).mod["main"](x, w, y)
    _check_dot(y, x, w, k)


@needs_bf16_dot
@settings(max_examples=12, deadline=None)
@given(rows=st.sampled_from([1, 3, 12, 13, 40]), shape=DOT_SHAPES, seed=st.integers(0, 2**16))
@example(rows=1, shape=(64, 128), seed=0)
@example(rows=13, shape=(37, 32), seed=1)
def test_matmul_bf16dot(rows, shape, seed):
    """Row counts around the IR's padding (12): the padded rows are never written to y."""
    n, k = shape
    x, w, y = _inputs(rows, n, k, "bfloat16", seed)
    kernel = cached_kernel(matmul, (n, k, "bfloat16"), DOT)
    kernel(x, w, y)
    _check_dot(y, x, w, k)
    x2, _, y2 = _inputs(rows + 5, n, k, "bfloat16", seed + 1)
    kernel(x2, w, y2)
    _check_dot(y2, x2, w, k)


@needs_bf16_dot
def test_bf16dot_is_the_default_for_bf16_weights_only():
    assert schedule(gemv(1, 64, 128, "bfloat16"), CPU)[1] == DOT
    assert schedule(matmul(64, 128, "bfloat16"), CPU)[1] == DOT
    assert schedule(gemv(1, 64, 128, "float32"), CPU)[1] == "rows"
    assert schedule(matmul(64, 100, "bfloat16"), CPU)[1] == "tiles"  # k not a multiple of 32


@pytest.mark.parametrize("mcpu", ["skylake-avx512", "haswell"])
def test_bf16dot_falls_back_without_the_instruction(mcpu):
    """Targets whose mcpu lacks avx512_bf16 get the fp32-activation kernels, and asking for the
    variant by name says it does not apply (scheduling only: no need for such a CPU here)."""
    target = named_target(f"cpu:{mcpu}")
    assert not has_bf16_dot(target)
    assert schedule(gemv(1, 64, 128, "bfloat16"), target)[1] == "rows"
    assert schedule(matmul(64, 128, "bfloat16"), target)[1] == "tiles"
    with pytest.raises(ValueError, match="does not apply"):
        schedule(gemv(1, 64, 128, "bfloat16"), target, DOT)


def test_bf16_activations_need_bf16_weights():
    with pytest.raises(ValueError, match="bf16 weights"):
        gemv(1, 4, 32, "float32", activations="bfloat16")


@pytest.mark.parametrize("builder,args", [
    (gemv, (0, 4, 4, "float32")), (gemv, (17, 4, 4, "float32")),
    (matmul, (4, 4, "float16")), (matmul, (0, 4, "float32"))])
def test_rejects_bad_arguments(builder, args):
    with pytest.raises(ValueError):
        builder(*args)
