"""The eager reference against outputs of the official modeling code (../shared fixture).

Tolerance: 1e-4 max abs error on logits in float32 (the issue's bound). Both sides run the same
math in fp32 with different reduction orders (flex/flash/mamba kernels' CPU stand-ins versus
plain torch), so differences of a few 1e-5 on logits of magnitude ~1 are expected.
"""

import pytest
import torch
from safetensors.torch import load_file

import hymba_compile
from hymba_compile.config import HymbaConfig
from hymba_compile.reference import HymbaReference
from hymba_compile.weights import load_parameters
from tests.conftest import FIXTURE_DIR, needs_fixture

pytestmark = needs_fixture
ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    config = HymbaConfig.from_file(FIXTURE_DIR)
    params = load_parameters(FIXTURE_DIR, config, torch.float32)
    return config, params, load_file(str(FIXTURE_DIR / "expected.safetensors"))


def test_prompt_exercises_the_window(fixture):
    config, _, expected = fixture
    n = expected["input_ids"].shape[1]
    assert config.num_memory_tokens + n > config.num_memory_tokens + config.sliding_window


def test_prefill_logits_match_official(fixture):
    config, params, expected = fixture
    logits, _ = HymbaReference(config, params).prefill(expected["input_ids"], want_cache=False)
    err = (logits - expected["prefill_logits"]).abs().max().item()
    assert err <= ATOL, f"prefill max abs error {err:.3g}"


def _decode_teacher_forced(model, expected, n_steps):
    logits, cache = model.prefill(expected["input_ids"])
    step_logits, errors = logits[:, -1], []
    for s in range(n_steps):
        errors.append((step_logits[0] - expected["decode_logits"][s]).abs().max().item())
        step_logits = model.decode(cache, expected["greedy_ids"][s: s + 1])
    return errors


def test_decode_logits_match_official(fixture):
    config, params, expected = fixture
    errors = _decode_teacher_forced(HymbaReference(config, params), expected, 12)
    assert max(errors) <= ATOL, f"decode max abs errors per step {errors}"


def test_fixture_detects_the_decode_window_off_by_one(fixture, monkeypatch):
    """Negative control: giving decode the prefill window (W instead of W - 1) must break parity,
    so the test above really checks the official cache truncation (spec §4.2, P16)."""
    import hymba_compile.reference as ref

    config, params, expected = fixture
    original = ref.visible_keys
    monkeypatch.setattr(ref, "visible_keys", lambda q, k, v, a, w, m: original(
        q, k, v, a, w + 1 if q.shape[1] == 1 else w, m))
    errors = _decode_teacher_forced(HymbaReference(config, params), expected, 12)
    assert max(errors) > 100 * ATOL


def test_greedy_ids_reproduced_through_the_public_api():
    expected = load_file(str(FIXTURE_DIR / "expected.safetensors"))
    model = hymba_compile.load(FIXTURE_DIR, backend="eager", dtype="float32")
    prompt = expected["input_ids"]
    out = model.generate(prompt, max_new_tokens=expected["greedy_ids"].numel())
    assert out[0, : prompt.shape[1]].tolist() == prompt[0].tolist()
    assert out[0, prompt.shape[1]:].tolist() == expected["greedy_ids"].tolist()
    err = (model.logits(prompt) - expected["prefill_logits"]).abs().max().item()
    assert err <= ATOL
