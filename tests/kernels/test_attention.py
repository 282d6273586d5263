"""Attention kernels (ir/attention.py) against the reference twins, for every CPU schedule variant:
RoPE against `rope_cos_sin` + `apply_rope`; prefill and decode attention against `visible_keys` +
`attention` (prefill window W, decode window W - 1, as the reference's module docstring says);
the decode caches built by our fill/write kernels over a prefill plus several decode steps,
through ring-buffer wrap-around, unused cache slots holding NaN (so reading one would show)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hymba_compile.config import GLOBAL, SLIDING
from hymba_compile.reference import apply_rope, attention, rope_cos_sin, rope_inv_freq, visible_keys
from hymba_compile.ir import attention as A
from hymba_compile.schedules import named_target, variants
from tests.kernels.helpers import POCL, TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
BASES = st.sampled_from([10000.0, A.HYMBA_BASE, 500.0])

# Compiled shapes are drawn from short lists (each new one costs a compile, ~0.5 s); lengths,
# pads, positions, steps and data are drawn freely. Together they cover GQA ratios 1, 2 and 5,
# head dims that are not multiples of the 16-lane vectors (2, 3, 6, 24, 40), Hymba's 64/128,
# windows 0, 1, shorter and longer than the sequence, meta 0, 1 and more, fp32 and bf16.
# rope: (batch, heads, kv heads, q/k dim, v dim, owns kv, dtype)
ROPE_SHAPES = [(1, 5, 1, 64, 128, True, "float32"), (2, 4, 2, 24, 3, True, "bfloat16"),
               (2, 2, 2, 6, 8, False, "float32"), (1, 1, 1, 2, 24, True, "bfloat16")]
# prefill: (batch, heads, kv heads, q/k dim, v dim, window, meta, dtype)
PREFILL_SHAPES = [(1, 5, 1, 64, 128, 33, 5, "float32"), (2, 4, 2, 24, 24, 7, 0, "bfloat16"),
                  (2, 2, 2, 6, 3, None, 0, "float32"), (2, 3, 3, 8, 40, 0, 1, "bfloat16")]
# decode: (batch, heads, kv heads, q/k dim, v dim, window, meta, dtype, cache dtype)
SLIDING_SHAPES = [(1, 5, 1, 64, 128, 16, 8, "float32", "float32"),
                  (3, 2, 2, 6, 3, 1, 6, "bfloat16", "bfloat16")]
# global decode: (batch, heads, kv heads, q/k dim, v dim, meta, dtype, cache dtype); capacity 64
GLOBAL_SHAPES = [(2, 5, 1, 8, 40, 4, "float32", "float32"),
                 (3, 4, 2, 24, 24, 0, "float32", "bfloat16")]
GLOBAL_CAPACITY = 64

# Tolerances (helpers.TOLERANCES, per output dtype).
# - fp32 attention: both sides compute in fp32 with different summation orders and exp (ours a
#   polynomial, ~2 ulp), so outputs agree to a few ulp times the number of terms: 1e-5.
# - bf16 attention: both sides compute the same fp32 math from the same bf16 inputs and round
#   once to bf16; the fp32 differences flip that rounding now and then, a 1-ulp bf16 difference
#   (2^-8 relative): 2^-7.
# - RoPE: the angle pos * inv_freq is the same fp32 product on both sides (same inv_freq table,
#   checked below); cos/sin come from libm here and from torch there (~1 ulp apart) and LLVM may
#   fuse x*cos + y*sin: fp32 1e-5 with atol x4 for |x| up to ~4. In bf16 the kernel rounds every
#   product and the sum to bf16 as torch's bf16 ops do (bit-exact in practice); 2^-7 leaves room
#   for a cos/sin value that rounds to the other bf16 neighbour.


def _rows(pads: list[int], length: int):
    """Packed positions [b, S] (pads -1) and validity of a left-padded batch."""
    idx = torch.arange(length)[None]
    p = torch.tensor(pads)[:, None]
    valid = idx >= p
    return torch.where(valid, idx - p, torch.full_like(idx, -1)), valid


# ---------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------

def test_inv_freq_table_matches_reference():
    """The kernel's build-time inv_freq table is the reference's (bit for bit) at the test sizes
    and at Hymba's; the RoPE tests below rely on it."""
    for dim in (2, 6, 8, 24, 64):
        for base in (10000.0, A.HYMBA_BASE, 500.0):
            ours = torch.tensor(A.rope_inv_freq_f32(dim, base), dtype=torch.float32)
            assert torch.equal(ours, rope_inv_freq(dim, base)), (dim, base)


@pytest.mark.parametrize("variant", with_pocl(variants("rope", CPU)))
@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(ROPE_SHAPES), length=st.integers(1, 12), base=BASES,
       start=st.integers(0, 3000), pad=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_rope(variant, shape, length, base, start, pad, seed):
    batch, h, kv, dq, dv, owns_kv, dtype = shape
    t = TORCH_DTYPES[dtype]
    rows = h * dq + kv * (dq + dv) + 7  # x and z columns after q|k|v, ignored
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(batch, length, rows, generator=g).to(t)
    pos = torch.arange(start, start + length)[None].repeat(batch, 1)
    pos[-1, : min(pad, length)] = -1  # the last row left-padded
    q = torch.empty(batch, h, length, dq, dtype=t)
    k = torch.empty(batch, kv, length, dq, dtype=t)
    v = torch.empty(batch, kv, length, dv, dtype=t)
    kern = cached_kernel(A.rope_qkv, (batch, h, kv, dq, dv, rows, base, owns_kv, dtype), variant)
    kern(proj, pos.to(torch.int32), q, k, v) if owns_kv else kern(proj, pos.to(torch.int32), q)

    cos, sin = rope_cos_sin(pos.clamp(min=0), dq, base, t)
    heads_of = lambda x, n: x.view(batch, length, n, -1).transpose(1, 2)  # noqa: E731
    q_ref = apply_rope(heads_of(proj[..., : h * dq], h), cos, sin)
    assert_close(q, q_ref, dtype, scale=4.0)
    if owns_kv:
        k_ref = apply_rope(heads_of(proj[..., h * dq: (h + kv) * dq], kv), cos, sin)
        v_ref = heads_of(proj[..., (h + kv) * dq: (h + kv) * dq + kv * dv], kv)
        assert_close(k, k_ref, dtype, scale=4.0)
        assert torch.equal(v, v_ref)


# fused decode RoPE + cache write: (batch, heads, kv heads, q/k dim, v dim, window, meta, capacity,
# dtype, cache dtype); window None = a global layer (capacity None: symbolic)
ROPE_CACHE_SHAPES = [(2, 5, 1, 64, 128, 8, 4, None, "float32", "bfloat16"),
                     (3, 4, 2, 6, 3, None, 2, 24, "float32", "float32"),
                     (1, 2, 2, 24, 8, 3, 0, None, "bfloat16", "bfloat16"),
                     (2, 1, 1, 2, 24, None, 1, None, "float32", "bfloat16")]


@pytest.mark.parametrize("variant", with_pocl(variants("rope_cache_write", CPU)))
@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(ROPE_CACHE_SHAPES), base=BASES, positions=st.lists(
    st.integers(-1, 3000), min_size=3, max_size=3), seed=st.integers(0, 2**16))
def test_rope_cache_write(variant, shape, base, positions, seed):
    """q rotated as the reference's apply_rope; the rotated k and the v of each row in its
    cache slot (ring slot M + (p - M) mod W, or p), in the cache dtype; every other slot (and
    every slot of a row at position -1, or past a global cache's end) untouched."""
    batch, h, kv, dq, dv, window, meta, capacity, dtype, cache_dtype = shape
    t, tc = TORCH_DTYPES[dtype], TORCH_DTYPES[cache_dtype]
    rows = h * dq + kv * (dq + dv) + 5
    cap = meta + window if window is not None else (capacity or 40)
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(batch, 1, rows, generator=g).to(t)
    pos = torch.tensor(positions[:batch], dtype=torch.int32)[:, None]
    q = torch.empty(batch, h, 1, dq, dtype=t)
    kc = torch.randn(batch, kv, cap, dq, generator=g).to(tc)
    vc = torch.randn(batch, kv, cap, dv, generator=g).to(tc)
    k_want, v_want = kc.clone(), vc.clone()
    kern = cached_kernel(A.rope_cache_write, (batch, h, kv, dq, dv, rows, base, window, meta,
                                              capacity, dtype, cache_dtype), variant)
    kern(proj, pos, kc, vc, q)

    cos, sin = rope_cos_sin(pos.long().clamp(min=0), dq, base, t)
    heads_of = lambda x, n: x.view(batch, 1, n, -1).transpose(1, 2)  # noqa: E731
    assert_close(q, apply_rope(heads_of(proj[..., : h * dq], h), cos, sin), dtype, scale=4.0)
    k_new = apply_rope(heads_of(proj[..., h * dq: (h + kv) * dq], kv), cos, sin)
    v_new = heads_of(proj[..., (h + kv) * dq: (h + kv) * dq + kv * dv], kv)
    for b in range(batch):
        p = int(pos[b])
        slot = p if window is None or p < meta else meta + (p - meta) % window
        if p >= 0 and slot < cap:
            k_want[b, :, slot] = k_new[b, :, 0].to(tc)
            v_want[b, :, slot] = v_new[b, :, 0].to(tc)
    assert_close(kc, k_want, cache_dtype, scale=4.0)
    assert torch.equal(vc, v_want)


# ---------------------------------------------------------------------------------------------
# Prefill
# ---------------------------------------------------------------------------------------------

def _prefill_reference(q, k, v, pads, window, num_meta):
    pos, valid = _rows(pads, q.shape[2])
    kind = GLOBAL if window is None else SLIDING
    vis = visible_keys(pos, pos, valid, kind, window if window is not None else 0, num_meta)
    return attention(q, k, v, vis)


@pytest.mark.parametrize("variant", with_pocl(variants("attention_prefill", CPU)))
@settings(max_examples=14, deadline=None)
@given(shape=st.sampled_from(PREFILL_SHAPES), length=st.integers(1, 140), data=st.data(),
       seed=st.integers(0, 2**16))
def test_prefill(variant, shape, length, data, seed):
    """Windows shorter and longer than the sequence, sequences shorter than meta + window,
    length 1, pads (left) including a row that is all pads."""
    batch, h, kv, dq, dv, window, num_meta, dtype = shape
    t = TORCH_DTYPES[dtype]
    pads = [0] + [data.draw(st.integers(0, length), label="pads") for _ in range(batch - 1)]
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(batch, h, length, dq, generator=g) * 2).to(t)
    k = (torch.randn(batch, kv, length, dq, generator=g) * 2).to(t)
    v = torch.randn(batch, kv, length, dv, generator=g).to(t)
    out = torch.full((batch, length, h * dv), float("nan"), dtype=t)
    cached_kernel(A.attention_prefill, (batch, h, kv, dq, dv, window, num_meta, dtype), variant)(
        q, k, v, torch.tensor(pads, dtype=torch.int32), out)
    assert_close(out, _prefill_reference(q, k, v, pads, window, num_meta), dtype)


@pytest.mark.parametrize("variant", with_pocl(variants("attention_prefill", CPU)))
@settings(max_examples=10, deadline=None)
@given(shape=st.sampled_from(PREFILL_SHAPES), length=st.integers(1, 140), data=st.data(),
       seed=st.integers(0, 2**16))
def test_prefill_queries_after_a_cached_prefix(variant, shape, length, data, seed):
    """Only the last Sq of the S packed tokens as queries (a prompt over keys that start with
    the cached meta tokens): the output equals those rows of the whole prefill's reference."""
    batch, h, kv, dq, dv, window, num_meta, dtype = shape
    t = TORCH_DTYPES[dtype]
    prefix = data.draw(st.integers(0, length - 1), label="prefix")
    pads = [0] + [data.draw(st.integers(0, prefix), label="pads") for _ in range(batch - 1)]
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(batch, h, length, dq, generator=g) * 2).to(t)
    k = (torch.randn(batch, kv, length, dq, generator=g) * 2).to(t)
    v = torch.randn(batch, kv, length, dv, generator=g).to(t)
    out = torch.full((batch, length - prefix, h * dv), float("nan"), dtype=t)
    cached_kernel(A.attention_prefill, (batch, h, kv, dq, dv, window, num_meta, dtype), variant)(
        q[:, :, prefix:].contiguous(), k, v, torch.tensor(pads, dtype=torch.int32), out)
    ref = _prefill_reference(q, k, v, pads, window, num_meta)[:, prefix:]
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("variant", with_pocl(variants("attention_prefill", CPU)))
def test_prefill_skips_blocks_outside_the_window(variant):
    """Long sequence, small window: blocks far outside the window hold huge keys that would
    dominate (and overflow) the softmax if they were visited unmasked; the result still matches."""
    b, h, kv, dq, dv, w, m, dtype = PREFILL_SHAPES[0]
    s = 300
    g = torch.Generator().manual_seed(1)
    q = torch.randn(b, h, s, dq, generator=g)
    k = torch.randn(b, kv, s, dq, generator=g)
    v = torch.randn(b, kv, s, dv, generator=g)
    k[:, :, m + 40: 200] *= 1e4
    out = torch.empty(b, s, h * dv)
    cached_kernel(A.attention_prefill, PREFILL_SHAPES[0], variant)(
        q, k, v, torch.zeros(b, dtype=torch.int32), out)
    ref = _prefill_reference(q, k, v, [0], w, m)
    assert not out.isnan().any()
    assert_close(out[:, 240:], ref[:, 240:], "float32")


# ---------------------------------------------------------------------------------------------
# Decode: prefill -> fill the caches -> decode steps (write, attend), against the reference
# ---------------------------------------------------------------------------------------------

def _decode_case(variant, kind, batch, heads, dq, dv, window, num_meta, length, steps, pads,
                 dtype, cache_dtype, seed, cache_variant=None, capacity=GLOBAL_CAPACITY):
    """`capacity` (global layers): the cache tensors' slots; None builds the kernels with a
    symbolic capacity and sizes the caches to exactly what the steps fill."""
    h, kv = heads
    t, tc = TORCH_DTYPES[dtype], TORCH_DTYPES[cache_dtype]
    if POCL in (variant, cache_variant):  # the whole chain as the CUDA kernels, on pocl
        variant = fill_variant = write_variant = POCL
    else:
        fill_variant, write_variant = (cache_variant if cache_variant in variants(family, CPU)
                                       else None for family in ("kv_cache_fill", "kv_cache_write"))
    g = torch.Generator().manual_seed(seed)
    sliding = kind == SLIDING
    cap = num_meta + window if sliding else (capacity or length + steps)
    if sliding:
        cache_args = (batch, kv, dq, dv, window, num_meta, dtype, cache_dtype)
        fill = cached_kernel(A.kv_cache_fill_sliding, cache_args, fill_variant)
        write = cached_kernel(A.kv_cache_write_sliding, cache_args, write_variant)
        decode = cached_kernel(A.attention_decode_sliding,
                               (batch, h, kv, dq, dv, window, num_meta, dtype, cache_dtype), variant)
    else:
        cache_args = (batch, kv, dq, dv, capacity, dtype, cache_dtype)
        fill = cached_kernel(A.kv_cache_fill_global, cache_args, fill_variant)
        write = cached_kernel(A.kv_cache_write_global, cache_args, write_variant)
        decode = cached_kernel(A.attention_decode_global,
                               (batch, h, kv, dq, dv, capacity, dtype, cache_dtype), variant)

    # prefill keys (what rope_qkv produced), pads included
    k_all = torch.randn(batch, kv, length, dq, generator=g).to(t)
    v_all = torch.randn(batch, kv, length, dv, generator=g).to(t)
    key_pos, key_valid = _rows(pads, length)
    kc = torch.full((batch, kv, cap, dq), float("nan"), dtype=tc)
    vc = torch.full((batch, kv, cap, dv), float("nan"), dtype=tc)
    pads_t = torch.tensor(pads, dtype=torch.int32)
    fill(k_all, v_all, pads_t, kc, vc)
    next_pos = key_pos[:, -1] + 1  # [b]
    for _ in range(steps):
        q = torch.randn(batch, h, 1, dq, generator=g).to(t)
        k_new = torch.randn(batch, kv, 1, dq, generator=g).to(t)
        v_new = torch.randn(batch, kv, 1, dv, generator=g).to(t)
        pos = next_pos.to(torch.int32)
        write(k_new, v_new, pos, kc, vc)
        k_all, v_all = torch.cat((k_all, k_new), 2), torch.cat((v_all, v_new), 2)
        key_pos = torch.cat((key_pos, next_pos[:, None]), 1)
        key_valid = torch.cat((key_valid, torch.ones(batch, 1, dtype=torch.bool)), 1)
        # valid slots: the ring's count min(pos - M + 1, W), or the global length pos + 1
        n = torch.clamp(next_pos - num_meta + 1, max=window) if sliding else next_pos + 1
        n = n.to(torch.int32)
        out = torch.full((batch, 1, h * dv), float("nan"), dtype=t)
        decode(q, kc, vc, n, out)
        vis = visible_keys(next_pos[:, None], key_pos, key_valid, kind,
                           window - 1 if sliding else 0, num_meta)
        # the cache holds k/v rounded to the cache dtype
        ref = attention(q, k_all.to(tc).to(t), v_all.to(tc).to(t), vis)
        assert_close(out, ref, dtype)
        next_pos = next_pos + 1


@pytest.mark.parametrize("variant", with_pocl(variants("attention_decode", CPU)))
@settings(max_examples=8, deadline=None)
@given(shape=st.sampled_from(SLIDING_SHAPES), length=st.integers(1, 30), steps=st.integers(1, 12),
       data=st.data(), seed=st.integers(0, 2**16))
def test_decode_sliding(variant, shape, length, steps, data, seed):
    """Ring buffer: windows below and above the prompt, wrap-around within the steps."""
    batch, h, kv, dq, dv, window, num_meta, dtype, cache_dtype = shape
    length = max(length, num_meta)  # a prompt always holds the meta tokens
    pads = [0] + [data.draw(st.integers(0, length - num_meta), label="pads") for _ in range(batch - 1)]
    _decode_case(variant, SLIDING, batch, (h, kv), dq, dv, window, num_meta, length, steps, pads,
                 dtype, cache_dtype, seed)


@pytest.mark.parametrize("variant", with_pocl(variants("attention_decode", CPU)))
@settings(max_examples=6, deadline=None)
@given(shape=st.sampled_from(GLOBAL_SHAPES), length=st.integers(1, 50), steps=st.integers(1, 6),
       data=st.data(), seed=st.integers(0, 2**16))
def test_decode_global(variant, shape, length, steps, data, seed):
    batch, h, kv, dq, dv, num_meta, dtype, cache_dtype = shape
    length = max(length, num_meta)
    pads = [0] + [data.draw(st.integers(0, length - num_meta), label="pads") for _ in range(batch - 1)]
    _decode_case(variant, GLOBAL, batch, (h, kv), dq, dv, 0, num_meta, length, steps, pads,
                 dtype, cache_dtype, seed)


@settings(max_examples=6, deadline=None)
@given(shape=st.sampled_from(GLOBAL_SHAPES), length=st.integers(1, 50), steps=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_decode_global_symbolic_capacity(shape, length, steps, seed):
    """Global kernels built with a symbolic capacity (the runtime's growing caches) on caches of
    exactly prompt + steps slots, so the last step writes the last slot."""
    batch, h, kv, dq, dv, num_meta, dtype, cache_dtype = shape
    length = max(length, num_meta)
    _decode_case(None, GLOBAL, batch, (h, kv), dq, dv, 0, num_meta, length, steps, [0] * batch,
                 dtype, cache_dtype, seed, capacity=None)


def test_decode_hymba_window_wraps_many_times():
    """Hymba's heads and dims, meta 8, window 16: 40 steps, the ring wraps twice."""
    batch, h, kv, dq, dv, window, num_meta, dtype, cache_dtype = SLIDING_SHAPES[0]
    _decode_case(None, SLIDING, batch, (h, kv), dq, dv, window, num_meta, 30, 40, [0], dtype,
                 cache_dtype, 3)


CACHE_VARIANTS = with_pocl(sorted(set(variants("kv_cache_fill", CPU))
                                  | set(variants("kv_cache_write", CPU))))


@pytest.mark.parametrize("cache_variant", CACHE_VARIANTS)
@settings(max_examples=4, deadline=None)
@given(sliding=st.booleans(), length=st.integers(1, 30), steps=st.integers(1, 10), data=st.data(),
       seed=st.integers(0, 2**16))
def test_cache_kernel_variants(cache_variant, sliding, length, steps, data, seed):
    """Every variant of the fill and write kernels (a family without that variant uses its
    default) under the default decode kernel, against the reference."""
    if sliding:
        batch, h, kv, dq, dv, window, num_meta, dtype, cache_dtype = SLIDING_SHAPES[1]
    else:
        (batch, h, kv, dq, dv, num_meta, dtype, cache_dtype), window = GLOBAL_SHAPES[0], 0
    length = max(length, num_meta)
    pads = [0] + [data.draw(st.integers(0, length - num_meta), label="pads") for _ in range(batch - 1)]
    _decode_case(None, SLIDING if sliding else GLOBAL, batch, (h, kv), dq, dv, window, num_meta,
                 length, steps, pads, dtype, cache_dtype, seed, cache_variant=cache_variant)
