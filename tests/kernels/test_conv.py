"""Causal conv1d kernels (ir/conv.py) against reference.causal_conv1d / conv_state_after /
causal_conv1d_step, for every CPU schedule variant.

Our layouts are channels-last: x [b, L, C], w [K, C], state [b, K, C]; the reference takes
x [b, C, L], weight [C, 1, K], state [b, C, K]. The tests transpose the inputs and outputs only.

Tolerances: y float32: both sides compute the K-tap sum and SiLU in fp32; the sums differ in order
and our exp is a polynomial (~2 ulp), so a few ulp of the pre-activation (|v| up to ~20 here):
rtol/atol 1e-5 with atol scaled by 4. y bfloat16: the fp32 values agree to a few ulp, and the
final rounding to bf16 can then land one bf16 ulp apart (TOLERANCES["bfloat16"]). The conv state
is a copy of inputs: compared exactly.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hymba_compile.reference import causal_conv1d as conv_ref
from hymba_compile.reference import causal_conv1d_step as step_ref
from hymba_compile.reference import conv_state_after
from hymba_compile.ir.conv import causal_conv1d, causal_conv1d_step
from hymba_compile.schedules import named_target, variants
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
CHANNELS = st.sampled_from([16, 48, 40])  # 40: not a multiple of the 16 vector lanes
DTYPES = st.sampled_from(["float32", "bfloat16"])


def _weights(g, channels, width, dtype):
    w = (torch.randn(channels, 1, width, generator=g) * 0.7).to(TORCH_DTYPES[dtype])
    bias = (torch.randn(channels, generator=g) * 0.5).to(TORCH_DTYPES[dtype])
    return w, _own(w[:, 0, :].t()), bias  # reference [C, 1, K]; ours [K, C]


def _own(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy in its own allocation. The kernels assume 64-byte-aligned data (TVM emits
    aligned vector loads; a view at an odd offset segfaults), so no argument is a view."""
    return t.clone(memory_format=torch.contiguous_format)


@pytest.mark.parametrize("variant", with_pocl(variants("causal_conv1d", CPU)))
@settings(max_examples=10, deadline=None)
@given(channels=CHANNELS, length=st.integers(1, 40), batch=st.integers(1, 2), dtype=DTYPES,
       seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_causal_conv1d(variant, channels, length, batch, dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, length, channels, generator=g) * scale).to(TORCH_DTYPES[dtype])
    w_ref, w, bias = _weights(g, channels, 4, dtype)
    y, state = torch.empty_like(x), torch.full((batch, 4, channels), 7.0, dtype=x.dtype)
    cached_kernel(causal_conv1d, (channels, 4, dtype), variant)(x, w, bias, y, state)
    x_ref = x.transpose(1, 2)
    assert_close(y, conv_ref(x_ref, w_ref, bias).transpose(1, 2), dtype, scale=4.0)
    assert torch.equal(state, conv_state_after(x_ref, 4).transpose(1, 2))


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
@settings(max_examples=4, deadline=None)
@given(length=st.integers(1, 9), dtype=DTYPES, wdtype=st.sampled_from([None, "float32"]),
       seed=st.integers(0, 2**16))
def test_causal_conv1d_widths_and_weight_dtype(width, length, dtype, wdtype, seed):
    """Default schedule; other conv widths, and fp32 weights with bf16 activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, 32, generator=g).to(TORCH_DTYPES[dtype])
    w_ref, w, bias = _weights(g, 32, width, wdtype or dtype)
    y, state = torch.empty_like(x), torch.empty(1, width, 32, dtype=x.dtype)
    cached_kernel(causal_conv1d, (32, width, dtype, wdtype), None)(x, w, bias, y, state)
    x_ref = x.transpose(1, 2)
    assert_close(y, conv_ref(x_ref, w_ref, bias).transpose(1, 2), dtype, scale=4.0)
    assert torch.equal(state, conv_state_after(x_ref, width).transpose(1, 2))


@pytest.mark.parametrize("variant", with_pocl(variants("causal_conv1d", CPU)))
@settings(max_examples=8, deadline=None)
@given(channels=CHANNELS, before=st.integers(0, 9), length=st.integers(1, 12),
       batch=st.integers(1, 2), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_causal_conv1d_continues_from_a_state(variant, channels, before, length, batch, dtype,
                                              seed):
    """The `with_state` form on a chunk after `before` earlier tokens (0: a zero state; fewer
    than K - 1: a state that is partly zero padding), given the state after them, equals the
    reference conv over the whole sequence restricted to the chunk; its state is the whole
    sequence's."""
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    x = torch.randn(batch, before + length, channels, generator=g).to(t)
    w_ref, w, bias = _weights(g, channels, 4, dtype)
    x_ref = x.transpose(1, 2)
    state_in = _own(conv_state_after(x_ref[..., :before], 4).transpose(1, 2))
    y, state = torch.empty(batch, length, channels, dtype=t), torch.empty(batch, 4, channels, dtype=t)
    cached_kernel(causal_conv1d, (channels, 4, dtype, None, True), variant)(
        _own(x[:, before:]), w, bias, state_in, y, state)
    assert_close(y, conv_ref(x_ref, w_ref, bias).transpose(1, 2)[:, before:], dtype, scale=4.0)
    assert torch.equal(state, conv_state_after(x_ref, 4).transpose(1, 2))


@pytest.mark.parametrize("variant", with_pocl(variants("causal_conv1d_step", CPU)))
@settings(max_examples=10, deadline=None)
@given(channels=CHANNELS, batch=st.integers(1, 3), dtype=DTYPES, seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_causal_conv1d_step(variant, channels, batch, dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    state_ref = (torch.randn(batch, channels, 4, generator=g) * scale).to(t)
    x = (torch.randn(batch, channels, generator=g) * scale).to(t)
    w_ref, w, bias = _weights(g, channels, 4, dtype)
    y_ref, new_state_ref = step_ref(state_ref, x, w_ref, bias)
    state = _own(state_ref.transpose(1, 2))
    y = torch.empty_like(x)
    cached_kernel(causal_conv1d_step, (channels, 4, dtype), variant)(state, x, w, bias, y)
    assert_close(y, y_ref, dtype, scale=4.0)
    assert torch.equal(state, new_state_ref.transpose(1, 2))  # advanced in place


@settings(max_examples=8, deadline=None)
@given(prompt=st.integers(1, 9), steps=st.integers(1, 6), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_prefill_then_steps_continue_the_sequence(prompt, steps, dtype, seed):
    """Prefill on a prompt, then decode steps fed the following inputs: the outputs and the final
    state equal the reference conv over the whole sequence."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, prompt + steps, 32, generator=g).to(TORCH_DTYPES[dtype])
    w_ref, w, bias = _weights(g, 32, 4, dtype)
    y = torch.empty(1, prompt, 32, dtype=x.dtype)
    state = torch.empty(1, 4, 32, dtype=x.dtype)
    prefill = cached_kernel(causal_conv1d, (32, 4, dtype), None)
    prefill(_own(x[:, :prompt]), w, bias, y, state)
    outs = [y]
    step = cached_kernel(causal_conv1d_step, (32, 4, dtype), None)
    for i in range(prompt, prompt + steps):
        yi = torch.empty(1, 32, dtype=x.dtype)
        step(state, _own(x[:, i]), w, bias, yi)
        outs.append(yi[:, None])
    x_ref = x.transpose(1, 2)
    assert_close(torch.cat(outs, 1), conv_ref(x_ref, w_ref, bias).transpose(1, 2), dtype, scale=4.0)
    assert torch.equal(state, conv_state_after(x_ref, 4).transpose(1, 2))


def _step_cols(channels, width, dtype, row, offset):
    return causal_conv1d_step(channels, width, dtype, x_columns=(row, offset))


@pytest.mark.parametrize("variant", with_pocl(variants("causal_conv1d_step", CPU)))
@settings(max_examples=6, deadline=None)
@given(channels=CHANNELS, batch=st.integers(1, 3), dtype=DTYPES, offset=st.sampled_from([0, 5, 16]),
       extra=st.sampled_from([0, 7]), seed=st.integers(0, 2**16))
def test_conv_step_reads_its_columns_of_a_wider_row(variant, channels, batch, dtype, offset, extra,
                                                    seed):
    """x_columns=(row, offset): x read in place from the in_proj output gives exactly what the
    kernel gives on those columns copied out."""
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    row = offset + channels + extra
    wide = torch.randn(batch, row, generator=g).to(t)
    state0 = torch.randn(batch, 4, channels, generator=g).to(t)
    _, w, bias = _weights(g, channels, 4, dtype)
    state_a, y_a = _own(state0), torch.empty(batch, channels, dtype=t)
    cached_kernel(causal_conv1d_step, (channels, 4, dtype), variant)(
        state_a, _own(wide[:, offset:offset + channels]), w, bias, y_a)
    state_b, y_b = _own(state0), torch.empty(batch, channels, dtype=t)
    cached_kernel(_step_cols, (channels, 4, dtype, row, offset), variant, causal_conv1d_step)(
        state_b, wide, w, bias, y_b)
    assert torch.equal(y_a, y_b) and torch.equal(state_a, state_b)
