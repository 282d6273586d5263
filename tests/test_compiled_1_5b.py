"""Slow: the hymba-1.5b preset (random weights, stored in bfloat16) through the compiled CPU
backend with its fp32-activation linears (`variants` below; on a CPU with avx512_bf16 the
default bf16dot linears round their inputs to bf16, checked on the tiny preset in
test_compiled_runtime.py) against the eager reference on the same weights (float32 math on the
upcast bf16 weights, which is what float32 activations compute).

Prompts: 300 tokens (inside the 1,024 window) and 1,300 tokens (past the window, so decode
runs on the wrapped ring with the official W - 1 truncation). Bounds (measured values in the
closing note of issue 5):
- prefill: float32 on both sides, different reduction orders over 32 layers: the issue's 1e-3
  max abs on logits of magnitude ~4 (measured 8.5e-6 and 9.9e-6);
- decode: as prefill plus the caches, which hold bf16 K/V (the reference keeps them in fp32;
  one bf16 rounding, 2^-9 relative, per cached key and value): 5e-2 (measured 0.006-0.011).
  Greedy ids identical.
"""

import pytest
import torch

from hymba_compile.config import preset
from hymba_compile.model import compiled_backend
from hymba_compile.reference import HymbaReference
from hymba_compile.weights import random_parameters

pytestmark = pytest.mark.slow
PREFILL_ATOL, DECODE_ATOL = 1e-3, 5e-2


@pytest.fixture(scope="module")
def sides():
    config = preset("hymba-1.5b")
    params = random_parameters(config, seed=0, dtype=torch.bfloat16)
    compiled = compiled_backend(config, params, torch.bfloat16, decode_batches=(1,), progress=False,
                                variants={"gemv": "rows", "matmul": "tiles"})
    reference = HymbaReference(config, {k: v.float() for k, v in params.items()})
    return config, compiled, reference


@pytest.mark.parametrize("prompt_len", [300, 1300])
def test_hymba_1_5b_compiled_matches_reference(sides, prompt_len):
    config, compiled, reference = sides
    ids = torch.randint(3, config.vocab_size, (1, prompt_len),
                        generator=torch.Generator().manual_seed(prompt_len))
    with torch.inference_mode():
        got, state = compiled.prefill(ids, last_only=True)
        want, ref_state = reference.prefill(ids, last_only=True)
        err = (got - want).abs().max().item()
        print(f"\nprompt {prompt_len}: prefill max abs {err:.3g} (logits up to "
              f"{want.abs().max().item():.3g})")
        assert err <= PREFILL_ATOL
        tok = want[:, -1].argmax(-1)
        assert got[:, -1].argmax(-1).tolist() == tok.tolist()
        # K/V storage: 17 owner layers only, 1,920 bytes per token slot each (spec)
        owners = [p for p in config.layer_plan() if p.owns_kv]
        assert len(owners) == 17 and len(state.caches) == 2 * 17
        for k, v in zip(state.caches[::2], state.caches[1::2]):
            assert (k[0, :, 0].numel() + v[0, :, 0].numel()) * k.element_size() == 1920
        for step in range(6):
            got, want = compiled.decode(state, tok), reference.decode(ref_state, tok)
            err = (got - want).abs().max().item()
            print(f"  decode step {step}: max abs {err:.3g}")
            assert err <= DECODE_ATOL
            assert got.argmax(-1).tolist() == want.argmax(-1).tolist()
            tok = want.argmax(-1)
