"""Model-wrap cases at Hymba-1.5B sizes (vocab 32001, hidden 1600): the embedding gather, and the
final norm + tied lm_head for decode (GEMV over the 102 MB bf16 head, memory bound) and prefill."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hymba_compile.ir.embed import embedding, lm_head_decode, lm_head_prefill

from ...build import build_kernel, knobbed
from ...reference import final_logits
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes

VOCAB, HIDDEN = 32001, 1600


def _embedding(n: int, dtype: str, variant: str | None = None):
    def setup() -> Prepared:
        table = torch.randn(VOCAB, HIDDEN).to(DTYPES[dtype])
        ids = torch.randint(0, VOCAB, (n,), dtype=torch.int32)
        out = torch.empty(n, HIDDEN, dtype=table.dtype)
        k = build_kernel(knobbed(embedding, VOCAB, HIDDEN, dtype, "int32"), variant=variant)
        return Prepared(ours=lambda: (k(ids, table, out), out)[1],
                        baseline=lambda: F.embedding(ids, table))

    def bytes_moved() -> int:  # the ids and the n table rows they pick in; out
        return nbytes(dtype, 2 * n * HIDDEN) + nbytes("int32", n)

    shown = f" [{variant}]" if variant else ""
    return KernelCase("embedding", f"{n} ids int32 -> [{n},{HIDDEN}] {dtype}{shown}", "F.embedding",
                      setup, memory_bound=True,
                      kernels=(KernelCall(embedding, (VOCAB, HIDDEN, dtype, "int32"),
                                          small_args=(100, 64, dtype, "int32"), dims={"n": 5},
                                          ranges={"ids": (0, 99)}),),
                      bytes_moved=bytes_moved, flops=lambda: 0, variant=variant)


def _head_inputs(rows: int, dtype: str):
    t = DTYPES[dtype]
    h = torch.randn(rows, HIDDEN).to(t)
    norm_w = (1 + 0.1 * torch.randn(HIDDEN)).to(t)
    head_w = (0.02 * torch.randn(VOCAB, HIDDEN)).to(t)
    return h, norm_w, head_w, torch.empty(rows, VOCAB)


def _head_bytes(rows: int, dtype: str) -> int:
    """h, the final norm's weight and the head in `dtype`; fp32 logits out."""
    return nbytes(dtype, rows * HIDDEN, HIDDEN, VOCAB * HIDDEN) + nbytes("float32", rows * VOCAB)


def _head_flops(rows: int) -> int:
    """The final RMSNorm (4 per element) and the head GEMM."""
    return 4 * rows * HIDDEN + 2 * rows * VOCAB * HIDDEN


def _lm_head_decode(batch: int, dtype: str):
    def setup() -> Prepared:
        h, norm_w, head_w, logits = _head_inputs(batch, dtype)
        k = build_kernel(knobbed(lm_head_decode, batch, HIDDEN, VOCAB, dtype))
        return Prepared(ours=lambda: (k(h, norm_w, head_w, logits), logits)[1],
                        baseline=lambda: final_logits(h, norm_w, head_w, 1e-6))
    return KernelCase("lm_head_decode", f"b{batch} [{batch},{HIDDEN}] x [{VOCAB},{HIDDEN}] {dtype}",
                      "reference.final_logits", setup, memory_bound=True,
                      target={"fraction_of_peak_gbps": 0.8},
                      kernels=(KernelCall(lm_head_decode, (batch, HIDDEN, VOCAB, dtype),
                                          small_args=(batch, 64, 200, dtype)),),
                      bytes_moved=lambda: _head_bytes(batch, dtype),
                      flops=lambda: _head_flops(batch))


def _lm_head_prefill(n: int, dtype: str):
    def setup() -> Prepared:
        h, norm_w, head_w, logits = _head_inputs(n, dtype)
        k = build_kernel(knobbed(lm_head_prefill, HIDDEN, VOCAB, dtype))
        return Prepared(ours=lambda: (k(h, norm_w, head_w, logits), logits)[1],
                        baseline=lambda: final_logits(h, norm_w, head_w, 1e-6))
    return KernelCase("lm_head_prefill", f"[{n},{HIDDEN}] x [{VOCAB},{HIDDEN}] {dtype}",
                      "reference.final_logits", setup,
                      kernels=(KernelCall(lm_head_prefill, (HIDDEN, VOCAB, dtype),
                                          small_args=(64, 200, dtype), dims={"n": 5}),),
                      bytes_moved=lambda: _head_bytes(n, dtype), flops=lambda: _head_flops(n))


def cases() -> list[KernelCase]:
    return [_embedding(1024, "bfloat16"), _embedding(1, "bfloat16"),
            _embedding(1, "bfloat16", "rows_serial"),
            _lm_head_decode(1, "bfloat16"), _lm_head_decode(8, "bfloat16"),
            _lm_head_decode(1, "float32"),
            _lm_head_prefill(128, "bfloat16"), _lm_head_prefill(128, "float32")]
