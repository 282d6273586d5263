"""Bias-free linear layers, y = x @ w^T, fp32 activations, weights fp32 or bf16 (read as stored,
widened to fp32 for the multiply), fp32 accumulation. Twin: `reference.linear` (with bf16
weights: F.linear on the weight widened to fp32, which is exact, so both sides compute the same
fp32 sums).

Two shapes of the same contraction:
  * `gemv`   decode: x [batch, k] with a small static batch (1..8), y [batch, n_out];
  * `matmul` prefill: x [m, k] with m symbolic (rows = meta + prompt tokens), y [m, n_out].
The weight keeps nn.Linear's [n_out, k] layout (row j of w is output j), so both x and w are
contiguous along the reduction axis k.

`activations="bfloat16"` (bf16 weights only) is the numerics of the CPU's bf16 dot-product
instructions (avx512_bf16's vdpbf16ps): x is first rounded to bf16 (round to nearest even, as
torch's x.to(torch.bfloat16)), products of two bf16 values are exact in fp32, sums stay fp32.
Twin: F.linear(x.to(bf16).float(), w.float()); against the fp32-activation kernel it differs by
the rounding of x, a relative 2^-9 per element.
"""

from __future__ import annotations

from tvm import te, tirx

from .common import check_dtype, f32, finish, i64, seq_var

MAX_DECODE_BATCH = 16  # the largest decode bucket (CUDA default 1, 2, 4, 8, 16)


ACTIVATIONS = ("float32", "bfloat16")


def round_activations(x: te.Tensor, activations: str = "float32") -> te.Tensor:
    """x itself, or (activations="bfloat16") the stage xb = bf16(x), rounded to nearest even."""
    if activations == "float32":
        return x
    return te.compute(x.shape, lambda *i: x(*i).astype("bfloat16"), name="xb")


def linear_compute(x: te.Tensor, w: te.Tensor, name: str = "y") -> te.Tensor:
    """te.compute of y[i, j] = sum_k f32(x[i, k]) * f32(w[j, k]) (any leading row extent)."""
    k_dim = x.shape[1]
    k = te.reduce_axis((0, k_dim), name="k")
    return te.compute((x.shape[0], w.shape[0]),
                      lambda i, j: te.sum(f32(x[i, k]) * f32(w[j, k]), axis=k), name=name)


def _check(n_out: int, k: int, weight_dtype: str, activations: str = "float32") -> None:
    check_dtype(weight_dtype)
    if n_out < 1 or k < 1:
        raise ValueError(f"n_out and k must be positive, got {n_out}, {k}")
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if activations == "bfloat16" and weight_dtype != "bfloat16":
        raise ValueError("bf16 activations pair with bf16 weights only")


def gemv(batch: int, n_out: int, k: int, weight_dtype: str = "float32",
         activations: str = "float32") -> tirx.PrimFunc:
    """Decode linear: (x [batch, k] f32, w [n_out, k] weight_dtype) -> y [batch, n_out] f32
    (x rounded to bf16 first with activations="bfloat16"; the same symbol either way: one
    kernel of the program, two numerics)."""
    _check(n_out, k, weight_dtype, activations)
    if not 1 <= batch <= MAX_DECODE_BATCH:
        raise ValueError(f"decode batch must be in 1..{MAX_DECODE_BATCH}, got {batch}")
    x = te.placeholder((batch, k), "float32", name="x")
    w = te.placeholder((n_out, k), weight_dtype, name="w")
    y = linear_compute(round_activations(x, activations), w)
    return finish(te.create_prim_func([x, w, y]), "gemv",
                  f"gemv_b{batch}_{n_out}x{k}_{weight_dtype}")


def matmul(n_out: int, k: int, weight_dtype: str = "float32",
           activations: str = "float32") -> tirx.PrimFunc:
    """Prefill linear: (x [m, k] f32, w [n_out, k] weight_dtype) -> y [m, n_out] f32, m symbolic
    (x rounded to bf16 first with activations="bfloat16", as `gemv`)."""
    _check(n_out, k, weight_dtype, activations)
    m, n64, k64 = seq_var("m"), i64(n_out), i64(k)
    x = te.placeholder((m, k64), "float32", name="x")
    w = te.placeholder((n64, k64), weight_dtype, name="w")
    if activations == "bfloat16" and k % DOT_K == 0:
        y = padded_dot_compute(x, w, m)
    else:
        y = linear_compute(round_activations(x, activations), w)
    return finish(te.create_prim_func([x, w, y]), "matmul", f"matmul_{n_out}x{k}_{weight_dtype}")


DOT_LANES, DOT_PAIRS = 16, 2  # the dot-product instruction's fp32 lanes and bf16 pairs per lane
DOT_K = DOT_LANES * DOT_PAIRS
PAD_ROWS = 12  # bf16-activation GEMM rows are padded to a multiple: row tiles 1, 2, 3, 4, 6, 12


def padded_dot_compute(x: te.Tensor, w: te.Tensor, m, name: str = "y") -> te.Tensor:
    """The bf16-activation GEMM in the dot-product instruction's shape, rows padded (x fp32,
    rounded here, or already bf16; w bf16; the output block named `name`):
    xb [m_pad, k] = bf16(x) (zero rows past m), part[i, j, l] = sum over (ko, p) of
    f32(xb[i, 32 ko + 2 l + p]) * f32(w[j, 32 ko + 2 l + p]) for i < m_pad, then
    y[i, j] = sum_l part[i, j, l] for i < m. The padding gives row tiles without a tail
    (a tail predicate would block the schedule's tensorize); the same sums as
    `linear_compute` of bf16(x), in a fixed order."""
    k = x.shape[1]
    m_pad = tirx.floordiv(m + (PAD_ROWS - 1), PAD_ROWS) * PAD_ROWS
    zero = tirx.const(0, x.dtype)
    xb = te.compute((m_pad, k), lambda i, c: tirx.if_then_else(i < m, x[i, c], zero)
                    .astype("bfloat16"), name="xb")
    ko = te.reduce_axis((0, k // DOT_K), name="ko")
    p = te.reduce_axis((i64(0), i64(DOT_PAIRS)), name="p")

    def product(i, j, lane):
        col = ko * DOT_K + lane * DOT_PAIRS + p
        return te.sum(f32(xb[i, col]) * f32(w[j, col]), axis=[ko, p])

    part = te.compute((m_pad, w.shape[0], i64(DOT_LANES)), product, name="part")
    lane = te.reduce_axis((i64(0), i64(DOT_LANES)), name="lane")
    return te.compute((m, w.shape[0]), lambda i, j: te.sum(part[i, j, lane], axis=lane),
                      name=name)


# Hymba-1.5B projections (n_out, k): in_proj (G/P and consumer layers), x_proj, dt_proj,
# out_proj, FFN gate/up and down, lm_head.
SHAPES = {"in_proj": (8960, 1600), "in_proj_consumer": (8000, 1600), "x_proj": (132, 3200),
          "dt_proj": (3200, 100), "out_proj": (1600, 3200), "ffn_up": (5504, 1600),
          "ffn_down": (1600, 5504), "lm_head": (32001, 1600)}

EXAMPLES = [
    *[(gemv, (1, n, k, "bfloat16")) for n, k in SHAPES.values()],
    (gemv, (8, 8960, 1600, "float32")),
    *[(matmul, (*SHAPES[name], "bfloat16"))
      for name in ("in_proj", "x_proj", "dt_proj", "ffn_down")],
    (matmul, (8960, 1600, "float32")),
]
