"""Model wrap (spec §3.9): the token embedding gather and the final RMSNorm + tied lm_head.

Twins: `torch.nn.functional.embedding` and `reference.final_logits` (final_layernorm, then
`F.linear` with the tied head, logits cast to fp32).

Choices:
- `embedding` returns the table's dtype by default (a gather is an exact copy, as `F.embedding`
  is); `out_dtype="float32"` widens a bf16 table exactly, for an fp32 residual stream. Ids must lie
  in [0, vocab): `F.embedding` raises on others; this kernel clamps them into range (one min/max
  per row) so that a bad id can never read outside the table.
- `lm_head_decode` / `lm_head_prefill`: h, the norm weight and the head weight share one dtype
  (as the twin requires). The norm follows HymbaRMSNorm exactly (fp32 statistics, cast to the
  dtype, times the weight in the dtype), so the GEMV/GEMM input equals the twin's bit for bit; the
  dot products accumulate in fp32 and the logits stay fp32. (For bf16 the twin's `F.linear`
  rounds each logit to bf16 before `.float()`; ours does not, which is within bf16 tolerance and
  more accurate.) Decode takes only the last position, h [batch, hidden] with a static batch.
"""

from __future__ import annotations

from tvm import te, tirx

from .common import check_dtype, f32, finish, seq_var
from .linear import DOT_K, linear_compute, padded_dot_compute
from .norm import normalise

ID_DTYPES = ("int32", "int64")
EPS_ATTR = "hymba.norm_eps"


def embedding(vocab: int, hidden: int, dtype: str = "float32", ids_dtype: str = "int32",
              out_dtype: str | None = None) -> tirx.PrimFunc:
    """out[n, hidden] = table[clamp(ids[n], 0, vocab - 1), :]; ids [n] (n symbolic),
    table [vocab, hidden]; out in `out_dtype` (default: the table's dtype)."""
    check_dtype(dtype)
    check_dtype(ids_dtype, ID_DTYPES)
    out_dtype = check_dtype(out_dtype or dtype)
    if out_dtype != dtype and out_dtype != "float32":
        raise ValueError(f"out_dtype {out_dtype!r} would round a {dtype} table; use {dtype} or float32")
    n = seq_var()
    vocab_, hidden_ = tirx.IntImm(str(n.ty), vocab), tirx.IntImm(str(n.ty), hidden)
    ids = te.placeholder((n,), ids_dtype, name="ids")
    table = te.placeholder((vocab_, hidden_), dtype, name="table")

    def row(i):
        clamped = tirx.max(tirx.min(ids[i], tirx.const(vocab - 1, ids_dtype)), tirx.const(0, ids_dtype))
        return clamped if ids_dtype == str(n.ty) else tirx.Cast(str(n.ty), clamped)

    def out(i, j):
        v = table[row(i), j]
        return v if out_dtype == dtype else tirx.Cast(out_dtype, v)

    y = te.compute((n, hidden_), out, name="out")
    return finish(te.create_prim_func([ids, table, y]), "embedding",
                  f"embedding_{vocab}x{hidden}_{dtype}_{ids_dtype}_{out_dtype}")


def _final_logits(h: te.Tensor, hidden: int, vocab: int, dtype: str, eps: float):
    # Static dims in the index dtype of the row count (int64 when symbolic): a mix of int32 and
    # int64 loop extents makes fused indices carry casts, which dlight's GPU rules reject.
    idx = str(h.shape[0].ty)
    hidden_, vocab_ = tirx.IntImm(idx, hidden), tirx.IntImm(idx, vocab)
    norm_w = te.placeholder((hidden_,), dtype, name="norm_w")
    head_w = te.placeholder((vocab_, hidden_), dtype, name="head_w")
    xn = normalise(h, norm_w, hidden, eps, dtype, "xn")
    # The widened head weight is a stage of its own, so that a schedule may either inline it
    # (widen in registers, GEMV) or widen a tile once and reuse it for many rows (GEMM).
    wf = head_w if dtype == "float32" else te.compute(
        (vocab_, hidden_), lambda v, k: f32(head_w[v, k]), name="head_f32")
    k = te.reduce_axis((tirx.IntImm(idx, 0), hidden_), name="k")
    logits = te.compute((h.shape[0], vocab_),
                        lambda i, v: te.sum(f32(xn[i, k]) * wf[v, k], axis=k), name="logits")
    return [h, norm_w, head_w, logits]


def lm_head_decode(batch: int, hidden: int, vocab: int, dtype: str = "float32",
                   eps: float = 1e-6, dot_layout: bool = False) -> tirx.PrimFunc:
    """logits[batch, vocab] fp32 = head_w @ rmsnorm(h, norm_w): h [batch, hidden] (the last
    position of each sequence, batch static), norm_w [hidden], head_w [vocab, hidden].
    `dot_layout` (bf16): the normalised rows copied into a stage `xb` that the dot-product
    schedule reads as bf16 storage (same values, same sums)."""
    check_dtype(dtype)
    if not 1 <= batch <= 64:
        raise ValueError(f"decode batch must be a small static size, got {batch}")
    h = te.placeholder((batch, hidden), dtype, name="h")
    args = _final_logits(h, hidden, vocab, dtype, eps)
    if dot_layout:
        if dtype != "bfloat16":
            raise ValueError("the dot layout needs bf16")
        _, norm_w, head_w, logits = args
        xn = logits.op.input_tensors[0]
        xb = te.compute(xn.shape, lambda i, c: xn[i, c], name="xb")
        args = [h, norm_w, head_w, linear_compute(xb, head_w, name="logits")]
    func = finish(te.create_prim_func(args), "lm_head_decode",
                  f"lm_head_decode_b{batch}_{hidden}x{vocab}_{dtype}")
    return func.with_attr(EPS_ATTR, float(eps))


def lm_head_prefill(hidden: int, vocab: int, dtype: str = "float32",
                    eps: float = 1e-6, dot_layout: bool = False) -> tirx.PrimFunc:
    """logits[n, vocab] fp32 = rmsnorm(h, norm_w) @ head_w^T for every position: h [n, hidden],
    n symbolic. `dot_layout` (bf16, hidden a multiple of 32): the same sums in the shape of
    the CPU's bf16 dot-product instruction, rows padded (`linear.padded_dot_compute`; the
    normalised rows are bf16 already, so the numerics are unchanged)."""
    check_dtype(dtype)
    n = seq_var()
    h = te.placeholder((n, tirx.IntImm(str(n.ty), hidden)), dtype, name="h")
    args = _final_logits(h, hidden, vocab, dtype, eps)
    if dot_layout:
        if dtype != "bfloat16" or hidden % DOT_K:
            raise ValueError(f"the dot layout needs bf16 and hidden % {DOT_K} == 0")
        _, norm_w, head_w, logits = args
        xn = logits.op.input_tensors[0]
        args = [h, norm_w, head_w, padded_dot_compute(xn, head_w, n, name="logits")]
    func = finish(te.create_prim_func(args), "lm_head_prefill",
                  f"lm_head_prefill_{hidden}x{vocab}_{dtype}")
    return func.with_attr(EPS_ATTR, float(eps))  # lets a schedule rebuild it in another layout


HIDDEN, VOCAB = 1600, 32001
EXAMPLES = [
    (embedding, (VOCAB, HIDDEN, "bfloat16", "int32")),
    (embedding, (VOCAB, HIDDEN, "float32", "int64")),
    (embedding, (VOCAB, HIDDEN, "bfloat16", "int64", "float32")),
    (lm_head_decode, (1, HIDDEN, VOCAB, "bfloat16")),
    (lm_head_decode, (8, HIDDEN, VOCAB, "float32")),
    (lm_head_prefill, (HIDDEN, VOCAB, "bfloat16")),
]
