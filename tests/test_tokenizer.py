"""Tests of hymba_compile.tokenizer: the official tokenizer (when ../shared is present) and a tiny
hand-built one in tmp_path (always)."""

import json
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hymba_compile.errors import InputError, TokenizerError
from hymba_compile.tokenizer import HYMBA_CHAT_TEMPLATE, HymbaTokenizer, IncrementalDecoder

SHARED = Path(os.environ.get("HYMBA_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TOKENIZER_DIR = SHARED / "hymba-1.5b-base"
needs_tokenizer = pytest.mark.skipif(
    not (TOKENIZER_DIR / "tokenizer.json").is_file(),
    reason=f"official tokenizer not found at {TOKENIZER_DIR} (set HYMBA_SHARED)",
)

CHAT = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"}]
CHAT_TEXT = "<extra_id_0>System\nYou are a helpful assistant.\n\n<extra_id_1>User\nHi\n<extra_id_1>Assistant\n"
SAMPLES = [
    "Hello world",
    "naïve café 東京 🙂",
    "  two leading spaces and trailing  ",
    "line one\nline two\n\n\ttabbed",
    "€ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x00\x7f ☃",  # byte-fallback pieces (4-byte chars, control bytes)
    "",
]


def stream_all(tok, ids, context=()):
    """Everything an IncrementalDecoder emits for `ids` pushed one at a time, plus flush()."""
    dec = tok.stream(context)
    return "".join(dec.push(i) for i in ids) + dec.flush()


# ------------------------------------------------------------------ tiny tokenizer (no shared/)
def build_tiny(folder: Path, config: dict | None = None) -> Path:
    """A Llama-style BPE (byte fallback, ▁ normalizer, Strip decoder) written to folder/tokenizer.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in "▁abcdefghijklmnopqrstuvwxyzHW<>_!\n":
        vocab.setdefault(ch, len(vocab))
    merges = [("▁", "h"), ("e", "l"), ("el", "l"), ("ell", "o"), ("▁h", "ello"), ("o", "r")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def tiny(tmp_path):
    return HymbaTokenizer.from_folder(build_tiny(tmp_path / "tiny"))


def test_tiny_defaults_without_config(tiny, tmp_path):
    assert not (tmp_path / "tiny" / "tokenizer_config.json").exists()
    assert HymbaTokenizer.available(tmp_path / "tiny")
    assert (tiny.bos_id, tiny.eos_id) == (1, 2)
    assert tiny.vocab_size == 3 + 256 + 34 + 6
    assert tiny.chat_template == HYMBA_CHAT_TEMPLATE
    ids = tiny.encode("hello world")
    assert ids[0] == 1 and ids[-1] != 2
    assert tiny.encode("hello world", add_special_tokens=False) == ids[1:]
    assert tiny.decode(ids) == "hello world"
    assert tiny.decode(ids + [2], skip_special_tokens=False) == "<s> hello world</s>"


@pytest.mark.parametrize("text", SAMPLES)
def test_tiny_round_trip_and_stream(tiny, text):
    ids = tiny.encode(text, add_special_tokens=False)
    assert tiny.decode(ids) == text
    assert stream_all(tiny, ids) == tiny.decode(ids)


def test_tiny_chat_uses_fallback_template(tiny):
    assert tiny.apply_chat_template(CHAT) == CHAT_TEXT
    ids = tiny.encode_chat(CHAT)
    assert ids[0] != tiny.bos_id and tiny.bos_id not in ids
    assert tiny.decode(ids) == CHAT_TEXT


def test_config_flags_and_template_are_honoured(tmp_path):
    folder = build_tiny(tmp_path / "t", {
        "add_bos_token": False, "add_eos_token": True,
        "bos_token": {"content": "<s>"}, "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}"
                         "{% endfor %}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}",
    })
    tok = HymbaTokenizer.from_folder(folder)
    ids = tok.encode("hello")
    assert ids[0] != 1 and ids[-1] == 2
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "<s>[user]x></s>"
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=False) == "<s>[user]x</s>"


def test_missing_or_unreadable_tokenizer(tmp_path):
    missing = tmp_path / "nowhere"
    assert not HymbaTokenizer.available(missing)
    with pytest.raises(TokenizerError, match="nowhere"):
        HymbaTokenizer.from_folder(missing)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="bad"):
        HymbaTokenizer.from_folder(bad)
    cfg_bad = build_tiny(tmp_path / "cfg_bad")
    (cfg_bad / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        HymbaTokenizer.from_folder(cfg_bad)
    unknown_bos = build_tiny(tmp_path / "unknown_bos", {"bos_token": "<BOS>"})
    with pytest.raises(TokenizerError, match="<BOS>"):
        HymbaTokenizer.from_folder(unknown_bos)


@pytest.mark.parametrize("messages", [
    [], None, "Hi", [("user", "Hi")], [{"role": "robot", "content": "Hi"}],
    [{"role": "user"}], [{"role": "user", "content": 3}], [{"content": "Hi"}],
])
def test_bad_messages_raise_input_error(tiny, messages):
    with pytest.raises(InputError):
        tiny.apply_chat_template(messages)
    with pytest.raises(InputError):
        tiny.encode_chat(messages)


def test_bad_ids_and_text_raise_input_error(tiny):
    with pytest.raises(InputError):
        tiny.decode([tiny.vocab_size])
    with pytest.raises(InputError):
        tiny.decode([-1])
    with pytest.raises(InputError):
        tiny.decode(["a"])
    with pytest.raises(InputError):
        tiny.stream().push(10**9)
    with pytest.raises(InputError):
        tiny.encode(b"bytes")


# ------------------------------------------------------------------ official tokenizer
@pytest.fixture(scope="module")
def hymba():
    return HymbaTokenizer.from_folder(TOKENIZER_DIR)


@needs_tokenizer
def test_hello_world(hymba):
    assert hymba.encode("Hello world") == [1, 15043, 3186]
    assert hymba.encode("Hello world", add_special_tokens=False) == [15043, 3186]
    assert (hymba.bos_id, hymba.eos_id, hymba.vocab_size) == (1, 2, 32001)
    assert HymbaTokenizer.available(TOKENIZER_DIR)


@needs_tokenizer
def test_byte_fallback_pieces(hymba):
    assert hymba.encode("🙂", add_special_tokens=False) == [29871, 243, 162, 156, 133]
    assert hymba.decode([29871, 243, 162, 156, 133]) == "🙂"
    assert hymba.decode([1, 15043, 2]) == "Hello"
    assert hymba.decode([1, 15043, 2], skip_special_tokens=False) == "<s> Hello</s>"


@needs_tokenizer
@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_and_stream(hymba, text):
    ids = hymba.encode(text)
    assert hymba.decode(ids) == text
    assert stream_all(hymba, ids[1:]) == text


@needs_tokenizer
def test_stream_holds_partial_characters(hymba):
    dec = hymba.stream(hymba.encode("Hello"))
    assert dec.push(3186) == " world"
    assert dec.push(29871) == " "         # a bare "▁"
    assert [dec.push(i) for i in (243, 162, 156)] == ["", "", ""]  # partial 🙂 is held back
    assert dec.push(133) == "🙂"
    assert dec.push(2) == ""              # EOS is skipped
    assert dec.flush() == ""
    dec = hymba.stream(hymba.encode("Hello"))
    assert dec.push(243) == "" and dec.flush() == "\ufffd"  # an unfinished char comes out on flush
    assert dec.flush() == ""


@needs_tokenizer
def test_stream_with_prompt_context(hymba):
    ctx = hymba.encode("The capital of Japan is")
    gen = hymba.encode(" Tokyo (東京) 🙂.", add_special_tokens=False)[1:]  # drop the bare "▁"
    full = hymba.decode(ctx + gen)
    assert full == "The capital of Japan is Tokyo (東京) 🙂."
    assert stream_all(hymba, gen, ctx) == " Tokyo (東京) 🙂."
    # a context ending in byte-fallback pieces must not be cut inside its byte run
    ctx2 = hymba.encode("smile 🙂🙂🙂")
    assert stream_all(hymba, hymba.encode("€ ok", add_special_tokens=False), ctx2) \
        == hymba.decode(ctx2 + hymba.encode("€ ok", add_special_tokens=False))[len(hymba.decode(ctx2)):]


@needs_tokenizer
@settings(max_examples=50, deadline=None)
@given(prompt=st.text(max_size=20), text=st.text(max_size=40))
def test_stream_property(hymba, prompt, text):
    ids = hymba.encode(text, add_special_tokens=False)
    assert stream_all(hymba, ids) == hymba.decode(ids)
    ctx = hymba.encode(prompt)
    full, head = hymba.decode(ctx + ids), hymba.decode(ctx)
    assert full.startswith(head)
    assert stream_all(hymba, ids, ctx) == full[len(head):]
    # the normalizer maps " " to "▁", so a literal "▁" decodes to " "; special-token strings in
    # the text are matched as those tokens (as in transformers) and skipped by decode()
    assume("▁" not in text and not any(t in text for t in ("<s>", "</s>", "<unk>", "[PAD]")))
    assert hymba.decode(ids) == text


@needs_tokenizer
def test_official_chat_template(hymba):
    cfg = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == HYMBA_CHAT_TEMPLATE
    assert hymba.apply_chat_template(CHAT) == CHAT_TEXT
    assert hymba.apply_chat_template(CHAT, add_generation_prompt=False) == CHAT_TEXT[: -len("<extra_id_1>Assistant\n")]
    ids = hymba.encode_chat(CHAT)
    assert ids == hymba.encode(CHAT_TEXT, add_special_tokens=False)
    assert ids[0] != 1 and 1 not in ids
    assert hymba.decode(ids) == CHAT_TEXT
    # P25: <extra_id_0> / <extra_id_1> are plain text, not single special ids
    assert hymba._tok.token_to_id("<extra_id_0>") is None


def test_incremental_decoder_class_is_public(tiny):
    dec = IncrementalDecoder(tiny, tiny.encode("hello"))
    assert "".join(dec.push(i) for i in tiny.encode(" world", add_special_tokens=False)) + dec.flush() \
        == "  world"
