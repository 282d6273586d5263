"""Model-wrap kernels (ir/embed.py) against their twins, for every CPU schedule variant:
embedding against `F.embedding`, lm_head_decode / lm_head_prefill against
`reference.final_logits`."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hymba_compile.reference import final_logits
from hymba_compile.ir.embed import embedding, lm_head_decode, lm_head_prefill
from hymba_compile.schedules import named_target, variants
from hymba_compile.schedules.cpu.dot import has_bf16_dot
from hymba_compile.schedules.registry import schedule
from tests.kernels.helpers import TORCH_DTYPES, assert_close, cached_kernel, with_pocl

CPU = named_target("cpu")
DOT = "bf16dot"  # bf16 and hidden % 32 == 0 only: tested on its own below
needs_bf16_dot = pytest.mark.skipif(not has_bf16_dot(CPU), reason="this CPU has no avx512_bf16")
ID_DTYPES = {"int32": torch.int32, "int64": torch.int64}
# hidden: multiples of 16 (full vectors), 100 (only 4 divides it) and 33 (no vector split at all).
HIDDEN = st.sampled_from([16, 33, 48, 100, 160])
# vocab: 32001's divisor 3 (Hymba's tile), 4, 2 and primes (tiles of one row).
VOCAB = st.sampled_from([1, 2, 7, 12, 97, 100, 129])
DTYPES = st.sampled_from(["float32", "bfloat16"])


@pytest.mark.parametrize("variant", with_pocl(variants("embedding", CPU)))
@settings(max_examples=15, deadline=None)
@given(vocab=VOCAB, hidden=HIDDEN, n=st.integers(1, 40), dtype=DTYPES,
       ids_dtype=st.sampled_from(["int32", "int64"]), widen=st.booleans(), seed=st.integers(0, 2**16))
def test_embedding(variant, vocab, hidden, n, dtype, ids_dtype, widen, seed):
    g = torch.Generator().manual_seed(seed)
    out_dtype = "float32" if widen else dtype
    table = torch.randn(vocab, hidden, generator=g).to(TORCH_DTYPES[dtype])
    ids = torch.randint(0, vocab, (n,), generator=g).to(ID_DTYPES[ids_dtype])
    out = torch.empty(n, hidden, dtype=TORCH_DTYPES[out_dtype])
    cached_kernel(embedding, (vocab, hidden, dtype, ids_dtype, out_dtype), variant)(ids, table, out)
    # A gather (and a bf16 -> fp32 widening) is exact: no tolerance.
    assert torch.equal(out, F.embedding(ids, table).to(out.dtype))


@pytest.mark.parametrize("variant", with_pocl(variants("embedding", CPU)))
def test_embedding_clamps_out_of_range_ids(variant):
    """Documented deviation from F.embedding (which raises): bad ids read the nearest valid row,
    never memory outside the table."""
    table = torch.randn(5, 16)
    ids = torch.tensor([-3, 0, 4, 5, 1 << 30], dtype=torch.int64)
    out = torch.empty(5, 16)
    cached_kernel(embedding, (5, 16, "float32", "int64", "float32"), variant)(ids, table, out)
    assert torch.equal(out, F.embedding(ids.clamp(0, 4), table))


def test_embedding_rejects_rounding_output():
    with pytest.raises(ValueError):
        embedding(10, 16, "float32", "int32", "bfloat16")


def _head_inputs(rows, hidden, vocab, dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    t = TORCH_DTYPES[dtype]
    h = (torch.randn(rows, hidden, generator=g) * scale).to(t)
    norm_w = (1 + 0.5 * torch.randn(hidden, generator=g)).to(t)
    head_w = torch.randn(vocab, hidden, generator=g).to(t)
    return h, norm_w, head_w


def _check_logits(logits, h, norm_w, head_w, dtype):
    expected = final_logits(h, norm_w, head_w, 1e-6)
    # Both sides feed bit-identical normalised rows (same HymbaRMSNorm cast order) to the dot
    # products. float32: the sums differ only in order (a few ulp of sum|x*w|, ~1e-5 at these
    # sizes, so atol is scaled by sqrt(hidden)). bfloat16: the twin's F.linear rounds each logit
    # to bf16 (relative 2^-9) while ours stays fp32, so the bf16 tolerance (rtol 2^-7) applies.
    assert_close(logits, expected, dtype, scale=max(1.0, h.shape[1] ** 0.5))


@pytest.mark.parametrize("variant", with_pocl([v for v in variants("lm_head_decode", CPU)
                                                if v != DOT]))
@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 8), hidden=HIDDEN, vocab=VOCAB, dtype=DTYPES,
       seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_lm_head_decode(variant, batch, hidden, vocab, dtype, seed, scale):
    h, norm_w, head_w = _head_inputs(batch, hidden, vocab, dtype, seed, scale)
    logits = torch.full((batch, vocab), float("nan"))
    cached_kernel(lm_head_decode, (batch, hidden, vocab, dtype), variant)(h, norm_w, head_w, logits)
    _check_logits(logits, h, norm_w, head_w, dtype)


@pytest.mark.parametrize("variant", with_pocl([v for v in variants("lm_head_prefill", CPU)
                                                if v != DOT]))
@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 40), hidden=HIDDEN, vocab=VOCAB, dtype=DTYPES,
       seed=st.integers(0, 2**16), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_lm_head_prefill(variant, rows, hidden, vocab, dtype, seed, scale):
    h, norm_w, head_w = _head_inputs(rows, hidden, vocab, dtype, seed, scale)
    logits = torch.full((rows, vocab), float("nan"))
    cached_kernel(lm_head_prefill, (hidden, vocab, dtype), variant)(h, norm_w, head_w, logits)
    _check_logits(logits, h, norm_w, head_w, dtype)


# bf16dot: the same bf16 normalised rows and bf16 weights, products exact in fp32, fp32 sums in
# pairs: the same twin and tolerance as the bf16 rows above. Rows around the padding (12).
@needs_bf16_dot
@pytest.mark.parametrize("builder", [lm_head_decode, lm_head_prefill])
@settings(max_examples=10, deadline=None)
@given(rows=st.sampled_from([1, 3, 8, 12, 13, 40]), hidden=st.sampled_from([32, 64, 160]),
       vocab=st.sampled_from([12, 24, 30, 100, 128]), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_lm_head_bf16dot(builder, rows, hidden, vocab, seed, scale):
    """(Vocab sizes with weight blocks: a prime vocabulary falls back, tested below.)"""
    rows = min(rows, 8) if builder is lm_head_decode else rows
    h, norm_w, head_w = _head_inputs(rows, hidden, vocab, "bfloat16", seed, scale)
    logits = torch.full((rows, vocab), float("nan"))
    args = (rows, hidden, vocab, "bfloat16") if builder is lm_head_decode else (hidden, vocab,
                                                                              "bfloat16")
    cached_kernel(builder, args, DOT)(h, norm_w, head_w, logits)
    _check_logits(logits, h, norm_w, head_w, "bfloat16")


@needs_bf16_dot
def test_lm_head_bf16dot_is_the_bf16_default():
    assert schedule(lm_head_decode(1, 64, 30, "bfloat16"), CPU)[1] == DOT
    assert schedule(lm_head_prefill(64, 30, "bfloat16"), CPU)[1] == DOT
    assert schedule(lm_head_prefill(64, 30, "float32"), CPU)[1] == "tiles"
    assert schedule(lm_head_prefill(33, 30, "bfloat16"), CPU)[1] == "tiles"
    # 97 rows (as 32001 = 3 x 10667) admit no weight block: the fp32-activation tiles
    assert schedule(lm_head_prefill(64, 97, "bfloat16"), CPU)[1] == "tiles"


def test_lm_head_decode_rejects_large_batch():
    with pytest.raises(ValueError):
        lm_head_decode(65, 16, 10)
