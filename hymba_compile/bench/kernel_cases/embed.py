"""Model-wrap cases at Hymba-1.5B sizes (vocab 32001, hidden 1600): the embedding gather, and the
final norm + tied lm_head for decode (GEMV over the 102 MB bf16 head, memory bound) and prefill."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ir.embed import embedding, lm_head_decode, lm_head_prefill

from ...build import build_kernel
from ...reference import final_logits
from ..kernels import DTYPES, KernelCase, Prepared

VOCAB, HIDDEN = 32001, 1600


def _embedding(n: int, dtype: str, variant: str | None = None):
    def setup() -> Prepared:
        table = torch.randn(VOCAB, HIDDEN).to(DTYPES[dtype])
        ids = torch.randint(0, VOCAB, (n,), dtype=torch.int32)
        out = torch.empty(n, HIDDEN, dtype=table.dtype)
        k = build_kernel(embedding(VOCAB, HIDDEN, dtype, "int32"), variant=variant)
        return Prepared(ours=lambda: (k(ids, table, out), out)[1],
                        baseline=lambda: F.embedding(ids, table),
                        bytes_moved=2 * out.numel() * out.element_size() + ids.numel() * 4)
    shown = f" [{variant}]" if variant else ""
    return KernelCase("embedding", f"{n} ids int32 -> [{n},{HIDDEN}] {dtype}{shown}", "F.embedding",
                      setup, memory_bound=True)


def _head_inputs(rows: int, dtype: str):
    t = DTYPES[dtype]
    h = torch.randn(rows, HIDDEN).to(t)
    norm_w = (1 + 0.1 * torch.randn(HIDDEN)).to(t)
    head_w = (0.02 * torch.randn(VOCAB, HIDDEN)).to(t)
    return h, norm_w, head_w, torch.empty(rows, VOCAB)


def _lm_head_decode(batch: int, dtype: str):
    def setup() -> Prepared:
        h, norm_w, head_w, logits = _head_inputs(batch, dtype)
        k = build_kernel(lm_head_decode(batch, HIDDEN, VOCAB, dtype))
        size = head_w.element_size()
        return Prepared(ours=lambda: (k(h, norm_w, head_w, logits), logits)[1],
                        baseline=lambda: final_logits(h, norm_w, head_w, 1e-6),
                        bytes_moved=head_w.numel() * size + h.numel() * size + HIDDEN * size
                        + logits.numel() * 4)
    return KernelCase("lm_head_decode", f"b{batch} [{batch},{HIDDEN}] x [{VOCAB},{HIDDEN}] {dtype}",
                      "reference.final_logits", setup, memory_bound=True,
                      target={"fraction_of_peak_gbps": 0.8})


def _lm_head_prefill(n: int, dtype: str):
    def setup() -> Prepared:
        h, norm_w, head_w, logits = _head_inputs(n, dtype)
        k = build_kernel(lm_head_prefill(HIDDEN, VOCAB, dtype))
        return Prepared(ours=lambda: (k(h, norm_w, head_w, logits), logits)[1],
                        baseline=lambda: final_logits(h, norm_w, head_w, 1e-6))
    return KernelCase("lm_head_prefill", f"[{n},{HIDDEN}] x [{VOCAB},{HIDDEN}] {dtype}",
                      "reference.final_logits", setup)


def cases() -> list[KernelCase]:
    return [_embedding(1024, "bfloat16"), _embedding(1, "bfloat16"),
            _embedding(1, "bfloat16", "rows_serial"),
            _lm_head_decode(1, "bfloat16"), _lm_head_decode(8, "bfloat16"),
            _lm_head_decode(1, "float32"),
            _lm_head_prefill(128, "bfloat16"), _lm_head_prefill(128, "float32")]
