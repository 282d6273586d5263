"""Bias-free linear layers, y = x @ w^T, fp32 activations, weights fp32 or bf16 (read as stored,
widened to fp32 for the multiply), fp32 accumulation. Twin: `reference.linear` (with bf16
weights: F.linear on the weight widened to fp32, which is exact, so both sides compute the same
fp32 sums).

Two shapes of the same contraction:
  * `gemv`   decode: x [batch, k] with a small static batch (1..8), y [batch, n_out];
  * `matmul` prefill: x [m, k] with m symbolic (rows = meta + prompt tokens), y [m, n_out].
The weight keeps nn.Linear's [n_out, k] layout (row j of w is output j), so both x and w are
contiguous along the reduction axis k.
"""

from __future__ import annotations

from tvm import te, tirx

from .common import check_dtype, f32, finish, i64, seq_var

MAX_DECODE_BATCH = 16  # the largest decode bucket (CUDA default 1, 2, 4, 8, 16)


def linear_compute(x: te.Tensor, w: te.Tensor, name: str = "y") -> te.Tensor:
    """te.compute of y[i, j] = sum_k x[i, k] * f32(w[j, k]) (any leading row extent)."""
    k_dim = x.shape[1]
    k = te.reduce_axis((0, k_dim), name="k")
    return te.compute((x.shape[0], w.shape[0]),
                      lambda i, j: te.sum(f32(x[i, k]) * f32(w[j, k]), axis=k), name=name)


def _check(n_out: int, k: int, weight_dtype: str) -> None:
    check_dtype(weight_dtype)
    if n_out < 1 or k < 1:
        raise ValueError(f"n_out and k must be positive, got {n_out}, {k}")


def gemv(batch: int, n_out: int, k: int, weight_dtype: str = "float32") -> tirx.PrimFunc:
    """Decode linear: (x [batch, k] f32, w [n_out, k] weight_dtype) -> y [batch, n_out] f32."""
    _check(n_out, k, weight_dtype)
    if not 1 <= batch <= MAX_DECODE_BATCH:
        raise ValueError(f"decode batch must be in 1..{MAX_DECODE_BATCH}, got {batch}")
    x = te.placeholder((batch, k), "float32", name="x")
    w = te.placeholder((n_out, k), weight_dtype, name="w")
    y = linear_compute(x, w)
    return finish(te.create_prim_func([x, w, y]), "gemv",
                  f"gemv_b{batch}_{n_out}x{k}_{weight_dtype}")


def matmul(n_out: int, k: int, weight_dtype: str = "float32") -> tirx.PrimFunc:
    """Prefill linear: (x [m, k] f32, w [n_out, k] weight_dtype) -> y [m, n_out] f32, m symbolic."""
    _check(n_out, k, weight_dtype)
    m, n64, k64 = seq_var("m"), i64(n_out), i64(k)
    x = te.placeholder((m, k64), "float32", name="x")
    w = te.placeholder((n64, k64), weight_dtype, name="w")
    y = linear_compute(x, w)
    return finish(te.create_prim_func([x, w, y]), "matmul", f"matmul_{n_out}x{k}_{weight_dtype}")


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
