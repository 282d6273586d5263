"""The shipped demo model (hymba_compile/demo_model): loads, is small, and its recorded
validation loss is reproduced."""

import json

import pytest
import torch

import hymba_compile
from hymba_compile.model import BACKENDS, DEMO_DIR
from hymba_compile.training.train_demo import METRICS_FILE, evaluate_folder


def test_demo_folder_is_complete_and_small():
    names = {p.name for p in DEMO_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "README.md", METRICS_FILE, "validation.safetensors"} <= names
    total = sum(p.stat().st_size for p in DEMO_DIR.iterdir())
    assert total <= 8 * 2**20, f"demo model folder is {total / 2**20:.2f} MiB"
    readme = (DEMO_DIR / "README.md").read_text()
    assert "shakespeare" in readme.lower() and "CC BY 2.5" in readme and "unigram" in readme


def test_demo_loads_as_the_default_with_a_tokenizer():
    model = hymba_compile.load("demo")
    assert model.tokenizer is not None and model.config.vocab_size == model.tokenizer.vocab_size
    assert model.dtype == torch.bfloat16  # the stored dtype, like the real checkpoint


def test_recorded_validation_loss_is_reproduced_and_beats_unigram():
    metrics = json.loads((DEMO_DIR / METRICS_FILE).read_text())
    loss = evaluate_folder(DEMO_DIR)
    assert loss == pytest.approx(metrics["validation_loss"], rel=0.01)
    assert metrics["validation_loss"] < metrics["unigram_validation_loss"] - 1.0


def test_generated_text_is_english_like():
    """The default generation (sampled, seed 0) decodes to words, not byte noise or whitespace:
    at least 10 words, and over 75% of the non-space characters are letters."""
    model = hymba_compile.load("demo")
    ids = model.tokenizer.encode("To be, or not to be,")
    out = model.generate([ids], 40, do_sample=True, temperature=0.8, top_k=40, seed=0)
    text = model.tokenizer.decode(out[0].tolist()[len(ids):])
    visible = [ch for ch in text if not ch.isspace()]
    assert len(text.split()) >= 10, text
    assert sum(ch.isalpha() for ch in visible) / len(visible) > 0.75, text


OTHER_BACKENDS = [b for b in BACKENDS if b != "eager"]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_greedy_generation_identical_across_backends(backend):
    prompt = "ROMEO.\n"
    eager = hymba_compile.load("demo", backend="eager", dtype="float32")
    other = hymba_compile.load("demo", backend=backend, dtype="float32")
    ids = eager.tokenizer.encode(prompt)
    assert torch.equal(eager.generate([ids], 32), other.generate([ids], 32))
