"""Pieces of train-demo: the fast scan equals the reference scan (values and gradients), the BPE
tokenizer, the corpus split, and a short end-to-end training run on synthetic text."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hymba_compile.reference import selective_scan
from hymba_compile.tokenizer import HymbaTokenizer
from hymba_compile.training import train_demo
from hymba_compile.training.bpe import BYTE_PIECES, SPECIALS, save_tokenizer, train_bpe
from hymba_compile.training.corpus import Corpus, clean_text, split_works
from hymba_compile.training.scan import selective_scan_fast

# fp32, both sides run the same recurrence; the fast one sums C*h over N in one reduction and
# its backward is a hand-written reverse scan, so values agree to ~1e-6 and gradients (which
# accumulate over T steps) to ~1e-5 relative.
SCAN_RTOL, SCAN_ATOL = 1e-4, 1e-4


def _scan_inputs(b, d, n, t, seed):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(b, d, t, generator=g), delta=torch.randn(b, d, t, generator=g) - 1,
        A=-torch.rand(d, n, generator=g) * 4, B=torch.randn(b, n, t, generator=g),
        C=torch.randn(b, n, t, generator=g), D=torch.randn(d, generator=g),
        z=torch.randn(b, d, t, generator=g), delta_bias=torch.randn(d, generator=g) * 0.5,
        initial_state=torch.randn(b, d, n, generator=g))


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), d=st.integers(1, 12), n=st.integers(1, 8), t=st.integers(1, 40),
       seed=st.integers(0, 2**16), masked=st.booleans())
def test_fast_scan_equals_reference_scan_and_its_gradients(b, d, n, t, seed, masked):
    mask = (torch.rand(b, t, generator=torch.Generator().manual_seed(seed)) > 0.3) if masked else None
    results = []
    for scan in (selective_scan, selective_scan_fast):
        inputs = {k: v.clone().requires_grad_() for k, v in _scan_inputs(b, d, n, t, seed).items()}
        y, last = scan(**inputs, step_mask=mask)
        (y.pow(2).sum() + last.sin().sum()).backward()
        results.append((y.detach(), last.detach(), {k: v.grad for k, v in inputs.items()}))
    (y0, h0, g0), (y1, h1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=SCAN_RTOL, atol=SCAN_ATOL)
    torch.testing.assert_close(h1, h0, rtol=SCAN_RTOL, atol=SCAN_ATOL)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=SCAN_RTOL, atol=SCAN_ATOL, msg=k)


TEXT = ["ROMEO.\nBut soft, what light through yonder window breaks?\n",
        "JULIET.\nO Romeo, Romeo, wherefore art thou Romeo?\n",
        "HAMLET.\nTo be, or not to be, that is the question.\n"] * 20


def test_bpe_layout_and_byte_fallback(tmp_path):
    tok = train_bpe(TEXT, vocab_size=400, limit_alphabet=40)
    assert 3 + 256 < tok.get_vocab_size() <= 400  # a tiny text may run out of merges
    assert [tok.token_to_id(p) for p in SPECIALS] == [0, 1, 2]
    assert tok.token_to_id("<0x00>") == 3 and tok.token_to_id("<0xFF>") == 3 + len(BYTE_PIECES) - 1
    save_tokenizer(tok, tmp_path)
    h = HymbaTokenizer.from_folder(tmp_path)
    text = "But soft — 東京 🙂 wherefore?"
    ids = h.encode(text)
    assert ids[0] == 1 and h.decode(ids) == text  # unseen characters round-trip through bytes


def test_clean_text_and_split():
    assert clean_text("a  \r\nb\n\n\n\n\nc\t\n") == "a\nb\n\nc\n"
    assert clean_text("   So long  as\tmen\n  can breathe") == "So long as men\ncan breathe\n"
    works = {f"w{i:02d}": f"text {i}" for i in range(20)}
    corpus = split_works(works, every=10)
    assert sorted(corpus.validation) == ["w05", "w15"]
    assert not set(corpus.validation) & set(corpus.train) and len(corpus.train) == 18


def test_train_end_to_end_on_synthetic_text(tmp_path, monkeypatch):
    """Two steps on a synthetic corpus (the real one is downloaded with pip at training time):
    the folder appears complete, loads like a checkpoint, and its recorded loss re-evaluates."""
    monkeypatch.setattr(train_demo, "load_corpus",
                        lambda workdir: Corpus(train={f"t{i}": t for i, t in enumerate(TEXT)},
                                               validation={"v": "".join(TEXT[:6])}))
    settings_ = train_demo.TrainSettings(steps=2, batch_size=2, seq_len=16, vocab_size=400,
                                         val_windows=4)
    out = tmp_path / "demo"
    metrics = train_demo.train(out, tmp_path / "work", settings_)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "config.json", "metrics.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "validation.safetensors"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".demo-")] == []
    recorded = json.loads((out / "metrics.json").read_text())
    assert recorded["steps"] == 2 and recorded["validation_loss"] == pytest.approx(metrics["validation_loss"])
    assert train_demo.evaluate_folder(out) == pytest.approx(recorded["validation_loss"], rel=1e-6)
