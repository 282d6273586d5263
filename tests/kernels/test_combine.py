"""Fused combine kernels (ir/combine.py) against reference.swiglu and reference.hybrid_combine,
for every CPU schedule variant of the fused kernel, fp32 and bf16 weights.

Each fused kernel is tested the way the model uses it, followed by its linear (gate+up then
the down gemv/matmul; norm_average then the out_proj matmul), against the whole twin function;
hybrid_combine_decode is one kernel. The follow-up linear runs its fp32-activation variant
(`FOLLOW_UP`; the twins keep fp32 activations; every linear variant, bf16dot included, is covered
by test_linear.py).

Tolerance: outputs are fp32; the references get the weights widened to fp32 (exact for bf16),
so both sides compute the same fp32 math except for summation order, the RMSNorm's rsqrt and
the polynomial exp in silu (~2 ulp): float32 tolerances with atol scaled by the reduction
length / 100 (see test_linear.py), twice that for SwiGLU, whose down projection sums k_ff
products of two already-rounded fp32 projections.
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hymba_compile.reference import hybrid_combine, swiglu
from hymba_compile.ir.combine import gate_up_decode, gate_up_prefill, hybrid_combine_decode, norm_average
from hymba_compile.ir.linear import gemv, matmul
from hymba_compile.schedules import named_target, variants

FOLLOW_UP = {"gemv": "rows", "matmul": "tiles"}  # fp32-activation linears after the fused kernel
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
DTYPES = st.sampled_from(["float32", "bfloat16"])
EPS = 1e-6
# (d_model, d_ff) and (d_inner, d_model): multiples of the vector width and odd sizes
FFN_SHAPES = st.sampled_from([(64, 96), (40, 37), (37, 24)])
MIX_SHAPES = st.sampled_from([(64, 32), (100, 37), (33, 20), (16, 8)])  # (16, 8): one vector per row


def _weight(g, n: int, k: int, dtype: str) -> torch.Tensor:
    return (torch.randn(n, k, generator=g) * k ** -0.5).to(TORCH_DTYPES[dtype])


def _ffn_inputs(rows, d_model, d_ff, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d_model, generator=g)
    gw, uw = _weight(g, d_ff, d_model, dtype), _weight(g, d_ff, d_model, dtype)
    dw = _weight(g, d_model, d_ff, dtype)
    return x, gw, uw, dw


def _check_ffn(y, x, gw, uw, dw):
    d_model, d_ff = x.shape[1], gw.shape[0]
    expected = swiglu(x, gw.float(), uw.float(), dw.float())
    assert_close(y, expected, "float32", scale=2 * max(1.0, max(d_model, d_ff) / 100))


@pytest.mark.parametrize("variant", with_pocl(variants("gate_up_gemv", CPU)))
@settings(max_examples=8, deadline=None)
@given(batch=st.sampled_from([1, 2, 8, 16]), shape=FFN_SHAPES, dtype=DTYPES, seed=st.integers(0, 2**16))
@example(batch=1, shape=(64, 96), dtype="bfloat16", seed=0)
@example(batch=8, shape=(40, 37), dtype="float32", seed=1)
def test_swiglu_decode(variant, batch, shape, dtype, seed):
    d_model, d_ff = shape
    x, gw, uw, dw = _ffn_inputs(batch, d_model, d_ff, dtype, seed)
    h, y = torch.full((batch, d_ff), float("nan")), torch.full((batch, d_model), float("nan"))
    cached_kernel(gate_up_decode, (batch, d_model, d_ff, dtype), variant)(x, gw, uw, h)
    cached_kernel(gemv, (batch, d_model, d_ff, dtype), FOLLOW_UP["gemv"])(h, dw, y)
    _check_ffn(y, x, gw, uw, dw)


@pytest.mark.parametrize("variant", with_pocl(variants("gate_up_matmul", CPU)))
@settings(max_examples=8, deadline=None)
@given(rows=st.sampled_from([1, 4, 7, 33]), shape=FFN_SHAPES, dtype=DTYPES,
       seed=st.integers(0, 2**16))
@example(rows=1, shape=(64, 96), dtype="float32", seed=0)
@example(rows=33, shape=(40, 37), dtype="bfloat16", seed=1)
def test_swiglu_prefill(variant, rows, shape, dtype, seed):
    d_model, d_ff = shape
    x, gw, uw, dw = _ffn_inputs(rows, d_model, d_ff, dtype, seed)
    h, y = torch.full((rows, d_ff), float("nan")), torch.full((rows, d_model), float("nan"))
    cached_kernel(gate_up_prefill, (d_model, d_ff, dtype), variant)(x, gw, uw, h)
    cached_kernel(matmul, (d_model, d_ff, dtype), FOLLOW_UP["matmul"])(h, dw, y)
    _check_ffn(y, x, gw, uw, dw)


def _mix_inputs(rows, d_inner, d_model, dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    attn = torch.randn(rows, d_inner, generator=g) * scale
    ssm = torch.randn(rows, d_inner, generator=g) / scale
    w1 = (1 + 0.5 * torch.randn(d_inner, generator=g)).to(TORCH_DTYPES[dtype])
    w2 = (1 + 0.5 * torch.randn(d_inner, generator=g)).to(TORCH_DTYPES[dtype])
    ow = _weight(g, d_model, d_inner, dtype)
    return attn, ssm, w1, w2, ow


def _check_mix(y, attn, ssm, w1, w2, ow):
    expected = hybrid_combine(attn, ssm, w1.float(), w2.float(), ow.float(), EPS)
    assert_close(y, expected, "float32", scale=max(1.0, attn.shape[1] / 100))


# scale: the two branch outputs at very different magnitudes (the norms make them comparable)
@pytest.mark.parametrize("variant", with_pocl(variants("hybrid_combine_decode", CPU)))
@settings(max_examples=8, deadline=None)
@given(batch=st.sampled_from([1, 3, 8, 16]), shape=MIX_SHAPES, dtype=DTYPES,
       seed=st.integers(0, 2**16), scale=st.sampled_from([1e-2, 1.0, 30.0]))
@example(batch=1, shape=(64, 32), dtype="bfloat16", seed=0, scale=1.0)
@example(batch=8, shape=(100, 37), dtype="float32", seed=1, scale=30.0)
def test_hybrid_combine_decode(variant, batch, shape, dtype, seed, scale):
    d_inner, d_model = shape
    attn, ssm, w1, w2, ow = _mix_inputs(batch, d_inner, d_model, dtype, seed, scale)
    y = torch.full((batch, d_model), float("nan"))
    cached_kernel(hybrid_combine_decode, (batch, d_inner, d_model, dtype, EPS), variant)(
        attn, ssm, w1, w2, ow, y)
    _check_mix(y, attn, ssm, w1, w2, ow)


@pytest.mark.parametrize("variant", with_pocl(variants("norm_average", CPU)))
@settings(max_examples=8, deadline=None)
@given(rows=st.sampled_from([1, 5, 40]), shape=MIX_SHAPES, dtype=DTYPES,
       seed=st.integers(0, 2**16), scale=st.sampled_from([1e-2, 1.0, 30.0]))
@example(rows=1, shape=(64, 32), dtype="float32", seed=0, scale=1.0)
@example(rows=40, shape=(100, 37), dtype="bfloat16", seed=1, scale=1e-2)
def test_hybrid_combine_prefill(variant, rows, shape, dtype, seed, scale):
    d_inner, d_model = shape
    attn, ssm, w1, w2, ow = _mix_inputs(rows, d_inner, d_model, dtype, seed, scale)
    fused = torch.full((rows, d_inner), float("nan"))
    y = torch.full((rows, d_model), float("nan"))
    cached_kernel(norm_average, (d_inner, dtype, EPS), variant)(attn, ssm, w1, w2, fused)
    cached_kernel(matmul, (d_model, d_inner, dtype), FOLLOW_UP["matmul"])(fused, ow, y)
    _check_mix(y, attn, ssm, w1, w2, ow)


@pytest.mark.parametrize("builder,args", [
    (gate_up_decode, (0, 8, 8)), (gate_up_decode, (17, 8, 8)), (hybrid_combine_decode, (17,)),
    (norm_average, (8, "int8")), (gate_up_prefill, (8, 8, "float16"))])
def test_rejects_bad_arguments(builder, args):
    with pytest.raises(ValueError):
        builder(*args)
