"""Selective-scan kernels (ir/scan.py) against reference.selective_scan / selective_state_update /
ssm_input_split, for every CPU schedule variant.

Our layouts are channels-last: u, delta, z, y [b, L, D]; B, C [b, L, N]; A [N, D]; state
[b, N, D]. The reference takes [b, D, L] / [b, N, L], A [D, N] and state [b, D, N]; the tests
transpose inputs and outputs only.

Masked steps: the reference's docstring (and our kernels) give y = 0 at a masked step, but its code
returns C.h * silu(z) there, which is 0 only while the carried state is 0 (pads in front of the
sequence, the model's case). With random initial states the tests therefore compare y at the
unmasked steps with the reference, require exactly 0 at the masked ones, and compare the final
state (which the reference carries through masked steps as documented).

Tolerances: float32: both sides do all math in fp32, but exp is a polynomial here (~2 ulp), the
softplus log1p a series (~1 ulp), and y = sum_n C_n h_n is summed in another order; the state
errors stay at a few ulp because every step decays (|exp(delta A)| <= 1). Outputs are compared with
rtol 1e-5 and atol 1e-5 scaled by the output's magnitude (terms of size max|y| cancel in the
sum). bfloat16 inputs are upcast exactly on both sides, so y differs by its final rounding to bf16
(one bf16 ulp, TOLERANCES["bfloat16"], scaled by magnitude); the fp32 state gets the fp32
tolerance.
"""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hymba_compile.reference import selective_scan as scan_ref
from hymba_compile.reference import selective_state_update as update_ref
from hymba_compile.reference import ssm_input_split as split_ref
from hymba_compile.ir.scan import selective_scan, selective_scan_chunked, selective_state_update, ssm_input_split
from hymba_compile.schedules import named_target, variants
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
DTYPES = st.sampled_from(["float32", "bfloat16"])
SHAPES = st.sampled_from([(16, 16), (32, 4), (16, 1)])  # (d_inner, d_state)


def _own(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy in its own allocation. The kernels assume 64-byte-aligned data (TVM emits
    aligned vector loads; a view at an odd offset segfaults), so no argument is a view."""
    return t.clone(memory_format=torch.contiguous_format)


def _mag(t: torch.Tensor) -> float:
    return max(1.0, t.float().abs().max().item())


def _params(g, d, n, a_log: bool):
    """(A or A_log as the kernel takes it [N, D], the reference's A [D, N], D, delta_bias)."""
    a_log_dn = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1) \
        + 0.3 * torch.randn(d, n, generator=g)
    A = -torch.exp(a_log_dn)
    ours = _own((a_log_dn if a_log else A).t())
    return ours, A, torch.randn(d, generator=g), 0.5 * torch.randn(d, generator=g)


def _prefill_inputs(g, batch, length, d, n, dtype, dt_shift):
    t = TORCH_DTYPES[dtype]
    u, z = map(_own, (torch.randn(2, batch, length, d, generator=g) * 1.5).to(t))
    delta = (torch.randn(batch, length, d, generator=g) + dt_shift).to(t)
    B, C = map(_own, torch.randn(2, batch, length, n, generator=g).to(t))
    return u, delta, B, C, z


# Positional wrappers (cached_kernel keys on the builder and a tuple of its arguments), memoised:
# parsing the TVMScript of a scan costs more than compiling it, and the variants share the IR.
@functools.lru_cache(maxsize=None)
def _scan(d, n, dtype, masked=False, a_log=False, tile=None, wdtype="float32", max_tile=64):
    return selective_scan(d, n, dtype, masked=masked, a_log=a_log, tile=tile, wdtype=wdtype,
                          max_tile=max_tile)


@functools.lru_cache(maxsize=None)
def _chunked(d, n, dtype, masked, a_log, chunk, max_tile=64):
    return selective_scan_chunked(d, n, dtype, masked=masked, a_log=a_log, chunk=chunk,
                                  max_tile=max_tile)


@functools.lru_cache(maxsize=None)
def _update(d, n, dtype, a_log=False, max_tile=64):
    return selective_state_update(d, n, dtype, a_log=a_log, max_tile=max_tile)


# the ir/ builder behind each wrapper: the pocl variant builds with that family's CUDA knobs
BUILDER_OF = {_scan: selective_scan, _chunked: selective_scan_chunked,
              _update: selective_state_update}


def _check_prefill(builder, args, variant, data, wdtype="float32"):
    """Run one prefill kernel (builder(*args), args = (d, n, dtype, masked, a_log, ...)) on drawn
    inputs and compare with reference.selective_scan."""
    d, n, dtype, masked, a_log = args[:5]
    g = torch.Generator().manual_seed(data["seed"])
    batch, length = data["batch"], data["length"]
    u, delta, B, C, z = _prefill_inputs(g, batch, length, d, n, dtype, data["dt_shift"])
    A, A_ref, D, bias = _params(g, d, n, a_log)
    D, bias = D.to(TORCH_DTYPES[wdtype]), bias.to(TORCH_DTYPES[wdtype])  # both sides see these
    h0_ref = torch.randn(batch, d, n, generator=g) * data["h0_scale"]
    mask = torch.rand(batch, length, generator=g) < 0.7 if masked else None
    y, h = torch.empty_like(u), torch.empty(batch, n, d)
    kernel = cached_kernel(builder, tuple(args), variant, BUILDER_OF[builder])
    kernel(u, delta, A, B, C, D, z, bias, _own(h0_ref.transpose(1, 2)),
           *([mask] if masked else []), y, h)
    tr = [v.transpose(1, 2) for v in (u, delta, B, C, z)]
    y_ref, h_ref = scan_ref(tr[0], tr[1], A_ref, tr[2], tr[3], D, tr[4], bias, h0_ref, mask)
    y_ref = y_ref.transpose(1, 2)
    assert_close(h.transpose(1, 2), h_ref, "float32", scale=4 * _mag(h_ref))
    if masked:
        assert torch.all(y[~mask] == 0)
        assert_close(y[mask], y_ref[mask], dtype, scale=4 * _mag(y_ref))
    else:
        assert_close(y, y_ref, dtype, scale=4 * _mag(y_ref))


PREFILL_DATA = dict(batch=st.integers(1, 2), length=st.integers(1, 40), seed=st.integers(0, 2**16),
                    dt_shift=st.sampled_from([-3.0, 0.0, 22.0]),  # 22: softplus above threshold
                    h0_scale=st.sampled_from([0.0, 1.0]))


@pytest.mark.parametrize("variant", with_pocl(variants("selective_scan", CPU)))
@settings(max_examples=10, deadline=None)
@given(shape=SHAPES, dtype=DTYPES, masked=st.booleans(), a_log=st.booleans(), **PREFILL_DATA)
def test_selective_scan(variant, shape, dtype, masked, a_log, **data):
    _check_prefill(_scan, (*shape, dtype, masked, a_log), variant, data)


@pytest.mark.parametrize("variant", with_pocl(variants("selective_scan_chunked", CPU)))
@settings(max_examples=8, deadline=None)
@given(shape=SHAPES, dtype=DTYPES, masked=st.booleans(), a_log=st.booleans(),
       chunk=st.sampled_from([1, 3, 8]), **PREFILL_DATA)
def test_selective_scan_chunked(variant, shape, dtype, masked, a_log, chunk, **data):
    """Lengths 1..40 against chunks 1, 3, 8: partial last chunks, one chunk, many chunks."""
    _check_prefill(_chunked, (*shape, dtype, masked, a_log, chunk), variant, data)


@settings(max_examples=6, deadline=None)
@given(dtype=DTYPES, tile=st.sampled_from([4, 8, 64]), wdtype=DTYPES, masked=st.booleans(),
       **PREFILL_DATA)
def test_selective_scan_tiles_and_weight_dtype(dtype, tile, wdtype, masked, **data):
    """Default schedule; other channel tiles (64: the default at Hymba size, several vector
    registers per lane loop), and bf16 D / delta_bias (upcast in the kernel)."""
    _check_prefill(_scan, (64, 4, dtype, masked, False, tile, wdtype), None, data, wdtype)


@pytest.mark.parametrize("variant", with_pocl(variants("selective_state_update", CPU)))
@settings(max_examples=10, deadline=None)
@given(shape=SHAPES, dtype=DTYPES, a_log=st.booleans(), batch=st.integers(1, 3),
       seed=st.integers(0, 2**16), dt_shift=st.sampled_from([-3.0, 0.0, 22.0]))
def test_selective_state_update(variant, shape, dtype, a_log, batch, seed, dt_shift):
    d, n = shape
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    state_ref = torch.randn(batch, d, n, generator=g)
    x, z = map(_own, (torch.randn(2, batch, d, generator=g) * 1.5).to(t))
    dt = (torch.randn(batch, d, generator=g) + dt_shift).to(t)
    B, C = map(_own, torch.randn(2, batch, n, generator=g).to(t))
    A, A_ref, D, bias = _params(g, d, n, a_log)
    y_ref, new_ref = update_ref(state_ref, x, dt, A_ref, B, C, D, z, bias)
    # a copy: with N = 1, transpose(1, 2).contiguous() would be a view of state_ref
    state = _own(state_ref.transpose(1, 2))
    y = torch.empty_like(x)
    kernel = cached_kernel(_update, (d, n, dtype, a_log), variant, BUILDER_OF[_update])
    kernel(state, x, dt, A, B, C, D, z, bias, y)
    assert_close(state.transpose(1, 2), new_ref, "float32", scale=4 * _mag(new_ref))  # in place
    assert_close(y, y_ref, dtype, scale=4 * _mag(y_ref))


@settings(max_examples=8, deadline=None)
@given(prompt=st.integers(1, 12), steps=st.integers(1, 5), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_prefill_then_decode_continues_the_scan(prompt, steps, dtype, seed):
    """The prefill's final state handed to decode steps gives the reference scan of the whole
    sequence (default schedules)."""
    d, n = 32, 4
    g = torch.Generator().manual_seed(seed)
    u, delta, B, C, z = _prefill_inputs(g, 1, prompt + steps, d, n, dtype, 0.0)
    A, A_ref, D, bias = _params(g, d, n, False)
    h0 = torch.randn(1, n, d, generator=g)
    y, state = torch.empty(1, prompt, d, dtype=u.dtype), torch.empty(1, n, d)
    head = [_own(v[:, :prompt]) for v in (u, delta, B, C, z)]
    cached_kernel(_scan, (d, n, dtype), None)(
        head[0], head[1], A, head[2], head[3], D, head[4], bias, h0, y, state)
    step = cached_kernel(_update, (d, n, dtype), None)
    outs = [y]
    for i in range(prompt, prompt + steps):
        yi = torch.empty(1, d, dtype=u.dtype)
        step(state, _own(u[:, i]), _own(delta[:, i]), A, _own(B[:, i]), _own(C[:, i]), D,
             _own(z[:, i]), bias, yi)
        outs.append(yi[:, None])
    tr = [v.transpose(1, 2) for v in (u, delta, B, C, z)]
    y_ref, h_ref = scan_ref(tr[0], tr[1], A_ref, tr[2], tr[3], D, tr[4], bias,
                            h0.transpose(1, 2))
    assert_close(state.transpose(1, 2), h_ref, "float32", scale=4 * _mag(h_ref))
    assert_close(torch.cat(outs, 1), y_ref.transpose(1, 2), dtype, scale=4 * _mag(y_ref))


@pytest.mark.parametrize("variant", with_pocl(variants("ssm_input_split", CPU)))
@settings(max_examples=10, deadline=None)
@given(sizes=st.sampled_from([(100, 16), (8, 4), (3, 1)]), rows=st.integers(1, 40), dtype=DTYPES,
       norms=st.booleans(), seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_ssm_input_split(variant, sizes, rows, dtype, norms, seed, scale):
    r, n = sizes
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    s = (torch.randn(rows, r + 2 * n, generator=g) * scale).to(t)
    ws = [torch.randn(k, generator=g).to(t) for k in (r, n, n)]
    outs = [torch.empty(rows, k, dtype=t) for k in (r, n, n)]
    kernel = cached_kernel(ssm_input_split, (r, n, dtype, 1e-6, norms), variant)
    kernel(s, *(ws if norms else []), *outs)
    expected = split_ref(s, r, n, *(ws if norms else (None, None, None)), 1e-6)
    for out, ref in zip(outs, expected):
        if norms:
            assert_close(out, ref, dtype, scale=4.0)  # as test_norm: |y| ~ |w| * O(1)
        else:
            assert torch.equal(out, ref)


def _update_cols(d, n, dtype, row, offset, max_tile=64):
    return selective_state_update(d, n, dtype, max_tile=max_tile, z_columns=(row, offset))


@pytest.mark.parametrize("variant", with_pocl(variants("selective_state_update", CPU)))
@settings(max_examples=6, deadline=None)
@given(shape=SHAPES, dtype=DTYPES, batch=st.integers(1, 3), offset=st.sampled_from([0, 3, 16]),
       extra=st.sampled_from([0, 5]), seed=st.integers(0, 2**16))
def test_state_update_reads_z_columns_of_a_wider_row(variant, shape, dtype, batch, offset, extra,
                                                     seed):
    """z_columns=(row, offset): z read in place from the in_proj output gives exactly what the
    kernel gives on those columns copied out."""
    d, n = shape
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    row = offset + d + extra
    wide = torch.randn(batch, row, generator=g).to(t)
    x, dt = map(_own, torch.randn(2, batch, d, generator=g).to(t))
    B, C = map(_own, torch.randn(2, batch, n, generator=g).to(t))
    A, _, D, bias = _params(g, d, n, False)
    state0 = torch.randn(batch, n, d, generator=g)
    state_a, y_a = _own(state0), torch.empty(batch, d, dtype=t)
    cached_kernel(_update, (d, n, dtype), variant, selective_state_update)(
        state_a, x, dt, A, B, C, D, _own(wide[:, offset:offset + d]), bias, y_a)
    state_b, y_b = _own(state0), torch.empty(batch, d, dtype=t)
    cached_kernel(_update_cols, (d, n, dtype, row, offset), variant, selective_state_update)(
        state_b, x, dt, A, B, C, D, wide, bias, y_b)
    assert torch.equal(y_a, y_b) and torch.equal(state_a, state_b)
