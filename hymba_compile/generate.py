"""Sampling and the generation loop, shared by every backend.

A backend provides `prefill(input_ids, attention_mask, want_cache, last_only) -> (logits [b, n, vocab]
(or [b, 1, vocab] with last_only), state)` and
`decode(state, token_ids [b]) -> logits [b, vocab]` (state updated in place).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .errors import InputError


class Backend(Protocol):
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                want_cache: bool = True, last_only: bool = False) -> tuple[torch.Tensor, object]: ...

    def decode(self, state: object, token_ids: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; validated on construction."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise InputError(f"temperature must be a finite number > 0, got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(f"top_k must be a positive integer, got {k!r}")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float))
                              or not 0 < p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InputError(f"seed must be an integer, got {self.seed!r}")


def next_tokens(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None) -> torch.Tensor:
    """Greedy argmax, or sampling with temperature, then top-k, then top-p (nucleus), as HF's
    TemperatureLogitsWarper/TopKLogitsWarper/TopPLogitsWarper do. logits [b, vocab] -> [b]."""
    if not params.do_sample:
        return logits.argmax(-1)
    scores = logits.float() / params.temperature
    if params.top_k is not None and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cum = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
        drop_sorted = cum - torch.softmax(sorted_scores, dim=-1) >= params.top_p  # keep >= 1 token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@dataclass
class GenerationStats:
    """Timings of one generate call."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    per_step_s: list[float] = field(default_factory=list)

    @property
    def decode_tok_s(self) -> float:
        """Decode steps per second (each step produces one token per row)."""
        steps = len(self.per_step_s)
        return steps / self.decode_s if self.decode_s > 0 else float("nan")


def generate_tokens(backend: Backend, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    max_new_tokens: int, sampling: SamplingParams, eos_ids: list[int], pad_id: int,
                    on_tokens: Callable[[torch.Tensor], None] | None = None,
                    stats: GenerationStats | None = None) -> torch.Tensor:
    """Prefill then decode until every row emitted an EOS id or max_new_tokens were produced.
    input_ids [b, n] -> [b, n + new]; after its EOS a row is filled with pad_id."""
    stats = stats if stats is not None else GenerationStats()
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator().manual_seed(sampling.seed)
    b = input_ids.shape[0]
    stats.prompt_tokens = int(input_ids.numel() if attention_mask is None else attention_mask.sum())
    if max_new_tokens == 0:
        return input_ids.clone()
    t0 = time.perf_counter()
    logits, state = backend.prefill(input_ids, attention_mask, last_only=True)
    stats.prefill_s = time.perf_counter() - t0
    step_logits = logits[:, -1]
    eos = torch.tensor(eos_ids, dtype=torch.long)
    finished = torch.zeros(b, dtype=torch.bool)
    produced = []
    for step in range(max_new_tokens):
        tok = next_tokens(step_logits, sampling, generator)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        produced.append(tok)
        if on_tokens is not None:
            on_tokens(tok)
        finished |= torch.isin(tok, eos)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        t1 = time.perf_counter()
        step_logits = backend.decode(state, tok)
        stats.per_step_s.append(time.perf_counter() - t1)
    stats.decode_s = sum(stats.per_step_s)
    stats.new_tokens = len(produced)
    return torch.cat((input_ids, torch.stack(produced, dim=1)), dim=1)
