"""A Llama-style BPE tokenizer trained with the `tokenizers` library: `<unk>`, `<s>`, `</s>` at
ids 0-2, the 256 byte-fallback pieces `<0x00>`..`<0xFF>` at ids 3-258 (as in Llama 2), then the
learned pieces; words are prefixed with the metaspace `▁`."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..fileio import atomic_write_text

SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_PIECES = [f"<0x{i:02X}>" for i in range(256)]


def train_bpe(texts: list[str], vocab_size: int, limit_alphabet: int = 120) -> Tokenizer:
    """Train BPE on `texts` to at most `vocab_size` ids (specials + 256 bytes + learned pieces;
    fewer only when the text has no more merges to learn).
    Characters outside the `limit_alphabet` most frequent ones fall back to bytes."""
    base = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(BYTE_PIECES), special_tokens=SPECIALS,
                                  limit_alphabet=limit_alphabet, show_progress=False)
    base.train_from_iterator(texts, trainer=trainer)

    spec = json.loads(base.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    pieces = SPECIALS + BYTE_PIECES + [p for p, _ in learned if p not in SPECIALS]
    spec["model"]["vocab"] = {p: i for i, p in enumerate(pieces)}
    spec["model"]["byte_fallback"] = True
    for added in spec["added_tokens"]:
        added["id"] = SPECIALS.index(added["content"])
    tok = Tokenizer.from_str(json.dumps(spec))
    # Llama 2's decoder: metaspace -> space, fuse byte pieces, drop the one prepended space.
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),
    ])
    return tok


def save_tokenizer(tok: Tokenizer, folder: Path) -> None:
    """Write tokenizer.json and a tokenizer_config.json (BOS added, no EOS) atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer",
              "padding_side": "left", "model_max_length": 2048}
    atomic_write_text(folder / "tokenizer.json", tok.to_str())
    atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
