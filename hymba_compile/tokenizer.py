"""Hymba tokenizer: a thin layer over the `tokenizers` library (no transformers).

Spec §5: Llama-2 SentencePiece-BPE vocabulary (32,000) plus `[PAD]` = 32000, byte fallback,
BOS `<s>` = 1 prepended to plain prompts, EOS `</s>` = 2 never appended. Chat prompts are the
rendered chat template encoded with *no* BOS; `<extra_id_0>` / `<extra_id_1>` are plain text (P25).
"""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path
from typing import Iterable, Sequence

from .errors import InputError, TokenizerError

# The Hymba chat template, byte-identical to `chat_template` in the official tokenizer_config.json.
# Used when a tokenizer folder has no template of its own.
HYMBA_CHAT_TEMPLATE = (
    "{{'<extra_id_0>System'}}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'\n' + message['content'].strip()}}{% if tools or contexts %}{{'\n'}}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if tools %}{% for tool in tools %}{{ '\n<tool> ' + tool|tojson + ' </tool>' }}{% endfor %}{% endif %}"
    "{% if contexts %}{% if tools %}{{'\n'}}{% endif %}"
    "{% for context in contexts %}{{ '\n<context> ' + context.strip() + ' </context>' }}{% endfor %}"
    "{% endif %}"
    "{{'\n\n'}}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<extra_id_1>User\n' + message['content'].strip() + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<extra_id_1>Assistant\n' + message['content'].strip() + '\n' }}"
    "{% elif message['role'] == 'tool' %}{{ '<extra_id_1>Tool\n' + message['content'].strip() + '\n' }}"
    "{% endif %}{% endfor %}"
    "{%- if add_generation_prompt %}{{'<extra_id_1>Assistant\n'}}{%- endif %}"
)

CHAT_ROLES = ("system", "user", "assistant", "tool")
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_REPLACEMENT = "\ufffd"


def _token_string(value, key: str, path: Path) -> str | None:
    """The token text of a tokenizer_config.json entry: a string, an AddedToken dict, or None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{path}: '{key}' must be a string, got {value!r}")


class HymbaTokenizer:
    """Encoder/decoder with Hymba's BOS/EOS rules and chat template."""

    def __init__(self, tokenizer, *, add_bos_token: bool = True, add_eos_token: bool = False,
                 bos_token: str | None = "<s>", eos_token: str | None = "</s>",
                 chat_template: str | None = None, source: str = "<memory>"):
        """Wrap a `tokenizers.Tokenizer`; BOS/EOS strings are looked up in its vocabulary."""
        self._tok = tokenizer
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.chat_template = chat_template if chat_template is not None else HYMBA_CHAT_TEMPLATE
        self.source = source
        self._bos_id = self._lookup(bos_token)
        self._eos_id = self._lookup(eos_token)
        self._vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._template = None  # compiled lazily

    def _lookup(self, token: str | None) -> int | None:
        if token is None:
            return None
        tid = self._tok.token_to_id(token)
        if tid is None:
            raise TokenizerError(f"{self.source}: special token {token!r} is not in the vocabulary")
        return tid

    # ---------------------------------------------------------------- loading
    @staticmethod
    def available(path) -> bool:
        """True when `path` is a folder containing a tokenizer.json."""
        return (Path(path) / "tokenizer.json").is_file()

    @classmethod
    def from_folder(cls, path) -> "HymbaTokenizer":
        """Load `path/tokenizer.json`, honouring `path/tokenizer_config.json` when present.

        Config keys used: add_bos_token (default True), add_eos_token (default False),
        bos_token / eos_token (default "<s>" / "</s>" if in the vocabulary), chat_template
        (default HYMBA_CHAT_TEMPLATE). Raises TokenizerError if anything is missing or unreadable.
        """
        from tokenizers import Tokenizer

        folder = Path(path)
        tok_file = folder / "tokenizer.json"
        if not tok_file.is_file():
            raise TokenizerError(f"no tokenizer.json in {folder}")
        try:
            tok = Tokenizer.from_file(str(tok_file))
        except Exception as exc:  # the library raises plain Exception subclasses
            raise TokenizerError(f"cannot read {tok_file}: {exc}") from exc

        cfg_file = folder / "tokenizer_config.json"
        cfg: dict = {}
        if cfg_file.is_file():
            try:
                cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise TokenizerError(f"cannot read {cfg_file}: {exc}") from exc
            if not isinstance(cfg, dict):
                raise TokenizerError(f"{cfg_file}: expected a JSON object")

        def default_special(name: str) -> str | None:
            return name if tok.token_to_id(name) is not None else None

        bos = _token_string(cfg["bos_token"], "bos_token", cfg_file) if "bos_token" in cfg \
            else default_special("<s>")
        eos = _token_string(cfg["eos_token"], "eos_token", cfg_file) if "eos_token" in cfg \
            else default_special("</s>")
        template = cfg.get("chat_template")
        if isinstance(template, list):  # transformers' named-template form
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise TokenizerError(f"{cfg_file}: 'chat_template' must be a string")
        return cls(tok, add_bos_token=cfg.get("add_bos_token", True),
                   add_eos_token=cfg.get("add_eos_token", False), bos_token=bos, eos_token=eos,
                   chat_template=template, source=str(folder))

    # ------------------------------------------------------------- properties
    @property
    def bos_id(self) -> int | None:
        """Id of the BOS token (1 for Hymba), or None if the tokenizer has none."""
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        """Id of the EOS token (2 for Hymba), or None if the tokenizer has none."""
        return self._eos_id

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (32,001 for Hymba)."""
        return self._vocab_size

    # ------------------------------------------------------- encode / decode
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of `text`; with add_special_tokens, BOS/EOS are added per add_bos_token/add_eos_token.

        The library's own post-processor is bypassed, so tokenizer.json's template does not matter.
        As in transformers, special-token strings inside `text` (e.g. "</s>") become their ids.
        """
        if not isinstance(text, str):
            raise InputError(f"text to encode must be a str, got {type(text).__name__}")
        try:
            ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        except Exception as exc:
            raise TokenizerError(f"cannot tokenize text: {exc}") from exc
        if add_special_tokens:
            if self.add_bos_token and self._bos_id is not None:
                ids.insert(0, self._bos_id)
            if self.add_eos_token and self._eos_id is not None:
                ids.append(self._eos_id)
        return ids

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        out = []
        for i in ids:
            try:
                if isinstance(i, bool):
                    raise TypeError
                i = operator.index(i)
            except TypeError:
                raise InputError(f"token id must be an int, got {i!r}") from None
            if not 0 <= i < self._vocab_size:
                raise InputError(f"token id {i} out of range [0, {self._vocab_size})")
            out.append(i)
        return out

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (byte-fallback pieces fused; the leading space of the first word dropped)."""
        return self._decode(self._check_ids(ids), skip_special_tokens)

    def is_byte_token(self, token_id: int) -> bool:
        """True if `token_id` is a byte-fallback piece such as <0xE2>."""
        piece = self._tok.id_to_token(int(token_id))
        return piece is not None and _BYTE_TOKEN.match(piece) is not None

    def stream(self, context: Sequence[int] = (), skip_special_tokens: bool = True) -> "IncrementalDecoder":
        """An IncrementalDecoder for text generated after the prompt ids `context`."""
        return IncrementalDecoder(self, context, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------- chat
    def _compiled_template(self):
        if self._template is None:
            from jinja2 import TemplateError, ext
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
                return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                                  separators=separators, sort_keys=sort_keys)

            def raise_exception(message):
                raise InputError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[ext.loopcontrols])
            env.filters["tojson"] = tojson
            env.globals["raise_exception"] = raise_exception
            try:
                self._template = env.from_string(self.chat_template)
            except TemplateError as exc:
                raise TokenizerError(f"{self.source}: invalid chat_template: {exc}") from exc
        return self._template

    @staticmethod
    def validate_messages(messages) -> None:
        """Raise InputError unless `messages` is a non-empty list of {'role', 'content': str} dicts."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise InputError("messages must be a non-empty list of {'role', 'content'} dicts")
        for k, m in enumerate(messages):
            if not isinstance(m, dict):
                raise InputError(f"message {k} must be a dict, got {type(m).__name__}")
            if m.get("role") not in CHAT_ROLES:
                raise InputError(f"message {k}: role must be one of {CHAT_ROLES}, got {m.get('role')!r}")
            if not isinstance(m.get("content"), str):
                raise InputError(f"message {k}: content must be a str")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The chat prompt text: the chat template rendered like transformers does (no tools/contexts)."""
        self.validate_messages(messages)
        from jinja2 import TemplateError

        template = self._compiled_template()
        try:
            return template.render(messages=[dict(m) for m in messages],
                                   add_generation_prompt=bool(add_generation_prompt),
                                   tools=None, contexts=None,
                                   bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as exc:
            raise TokenizerError(f"{self.source}: cannot render chat_template: {exc}") from exc

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Ids of the rendered chat prompt, with no BOS/EOS added (spec §5: the template has none)."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt),
                           add_special_tokens=False)


class IncrementalDecoder:
    """Streaming detokenizer: `push(id)` returns only newly completed text.

    Guarantee: for prompt ids C (the `context`) and generated ids G whose byte-fallback runs
    are valid UTF-8, ``"".join(push(g) for g in G) + flush()`` equals
    ``decode(C + G)[len(decode(C)):]`` — the text G adds after the prompt, leading space of the
    first generated word included. With an empty context it equals ``decode(G)``.

    Technique (as in HF text-generation-inference): decode the window ids[prefix:] and
    ids[prefix:read] and emit the difference, so the decoder's one-leading-space strip applies
    equally to both; hold text back while the window ends in U+FFFD (an incomplete UTF-8
    character split over byte tokens such as <0xE2><0x82><0xAC>).
    """

    _LOOKBACK = 6  # context tokens kept in the decode window

    def __init__(self, tokenizer: HymbaTokenizer, context: Sequence[int] = (),
                 skip_special_tokens: bool = True):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids = tokenizer._check_ids(context)
        # Start the window a few tokens back, but never inside a run of byte tokens: the
        # ByteFallback decoder fuses a whole run, so cutting one would change its text.
        p = max(len(self._ids) - self._LOOKBACK, 0)
        while p > 0 and tokenizer.is_byte_token(self._ids[p]):
            p -= 1
        self._prefix = p
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        """Append one generated id; return the text it completes ('' while a character is partial)."""
        self._ids.extend(self._tok._check_ids([token_id]))
        prefix_text = self._tok._decode(self._ids[self._prefix:self._read], self._skip)
        new_text = self._tok._decode(self._ids[self._prefix:], self._skip)
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """Return all text still held back (e.g. a trailing invalid/partial byte sequence)."""
        if self._read == len(self._ids):
            return ""
        prefix_text = self._tok._decode(self._ids[self._prefix:self._read], self._skip)
        new_text = self._tok._decode(self._ids[self._prefix:], self._skip)
        self._prefix, self._read = self._read, len(self._ids)
        return new_text[len(prefix_text):]
