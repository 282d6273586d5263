"""The public API: load(), logits(), generate() with sampling, EOS stopping and input checks."""

import pytest
import torch

import hymba_compile
from hymba_compile.errors import HymbaError, InputError, ModelNotFoundError
from hymba_compile.generate import SamplingParams, next_tokens


@pytest.fixture(scope="module")
def model():
    return hymba_compile.load("tiny")


def test_logits_shape_and_dtype(model):
    out = model.logits([[1, 5, 9, 3]])
    assert out.shape == (1, 4, model.config.vocab_size) and out.dtype == torch.float32


def test_preset_weights_are_seeded():
    a = hymba_compile.load("tiny", seed=1).logits([1, 2, 3])
    b = hymba_compile.load("tiny", seed=1).logits([1, 2, 3])
    c = hymba_compile.load("tiny", seed=2).logits([1, 2, 3])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_decode_equals_prefill_argmax(model):
    """Each greedy token chosen through the cache equals the argmax of a full no-cache forward
    over the sequence so far, while the sequence stays inside the window (W = 16)."""
    prompt = [1, 17, 33, 99]
    out = model.generate([prompt], max_new_tokens=8)[0].tolist()
    for k in range(len(prompt), len(out)):
        assert model.logits([out[:k]])[0, -1].argmax().item() == out[k]


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    ids = [[1, 40, 41]]
    a = model.generate(ids, 10, do_sample=True, temperature=1.5, seed=3)
    b = model.generate(ids, 10, do_sample=True, temperature=1.5, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(model.generate(ids, 10, do_sample=True, top_k=1, seed=9),
                       model.generate(ids, 10))


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    params = SamplingParams(do_sample=True, top_p=0.7, seed=0)
    gen = torch.Generator().manual_seed(0)
    seen = {int(next_tokens(logits, params, gen)) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: token 2 and 3 are cut


def test_stops_at_eos_per_row(model, monkeypatch):
    """Force token 2 (EOS) for row 0 at the first step: row 0 stops, row 1 continues; the
    finished row is filled with the pad id."""
    import hymba_compile.generate as gen_mod

    original = gen_mod.next_tokens
    calls = {"n": 0}

    def fake(logits, params, generator):
        tok = original(logits, params, generator)
        if calls["n"] == 0:
            tok[0] = 2
        calls["n"] += 1
        return tok

    monkeypatch.setattr(gen_mod, "next_tokens", fake)
    out = model.generate([[1, 5, 6], [1, 7, 8]], max_new_tokens=5)
    assert out.shape == (2, 8)
    assert out[0, 3].item() == 2 and out[0, 4:].tolist() == [model.config.pad_token_id] * 4
    assert 2 not in out[1, 3:].tolist()


def test_zero_new_tokens_returns_the_prompt(model):
    assert model.generate([[1, 2, 3]], 0).tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("kwargs, message", [
    ({"input_ids": [[]]}, "empty"),
    ({"input_ids": [[1, 999999]]}, "outside the vocabulary"),
    ({"input_ids": [[1.5, 2.0]]}, "integers"),
    ({"max_new_tokens": -1}, "non-negative"),
    ({"temperature": 0.0, "do_sample": True}, "temperature"),
    ({"temperature": float("nan"), "do_sample": True}, "temperature"),
    ({"top_k": 0, "do_sample": True}, "top_k"),
    ({"top_p": 1.5, "do_sample": True}, "top_p"),
    ({"attention_mask": [[1, 0, 1]]}, "left padding"),
    ({"attention_mask": [[0, 0, 0]]}, "no real token"),
    ({"attention_mask": [[1, 1]]}, "shape"),
    ({"max_new_tokens": 5000}, "context limit"),
])
def test_bad_generation_input(model, kwargs, message):
    args = {"input_ids": [[1, 2, 3]], "max_new_tokens": 2, **kwargs}
    with pytest.raises(InputError, match=message):
        model.generate(**args)


def test_prompt_over_the_context_limit(model):
    with pytest.raises(InputError, match="over the context limit"):
        model.logits([[1] * (model.config.max_context + 1)])


def test_load_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a checkpoint folder nor a preset"):
        hymba_compile.load(tmp_path / "missing")
    with pytest.raises(HymbaError, match="unknown backend"):
        hymba_compile.load("tiny", backend="cuda-magic")
    with pytest.raises(InputError, match="dtype"):
        hymba_compile.load("tiny", dtype="float16")
