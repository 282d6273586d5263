"""The two fused blocks around the linears of a Hymba layer, activations fp32, weights fp32 or
bf16 (widened to fp32 as read), fp32 accumulation.

Hybrid combine [spec §3.7], twin `reference.hybrid_combine`:
    fused = (rms_norm(attn, norm1_w) + rms_norm(ssm, norm2_w)) / 2;  y = fused @ out_w^T
  * `norm_average` (prefill, rows symbolic): the two 3200-wide RMSNorms (fp32 statistics) and
    their average -> fused [m, d_inner]; out_proj is then `ir.linear.matmul(d_model, d_inner)`.
  * `hybrid_combine_decode` (decode, static batch): norms, average and the out_proj GEMV in one
    kernel (the fused vector is tiny and is computed once, before the parallel GEMV).

SwiGLU FFN [spec §3.8], twin `reference.swiglu`:  down(silu(x @ gate^T) * (x @ up^T))
  * `gate_up_decode` (static batch) / `gate_up_prefill` (rows symbolic): both projections of
    the same x and the silu * mul epilogue -> h [rows, d_ff] (the gate and up results never
    leave the kernel's registers/cache tile); the down projection is then
    `ir.linear.gemv(batch, d_model, d_ff)` / `ir.linear.matmul(d_model, d_ff)`.

With fp32 activations the reference's RMSNorm cast `y.to(x.dtype)` is a no-op, so the fused
vector is `w * (x * rsqrt(mean(x^2) + eps))` in fp32, with a bf16 weight widened exactly.
"""

from __future__ import annotations

from tvm import te, tirx

from .common import check_dtype, f32, finish, i64, seq_var
from .fastmath import silu_f32
from .linear import MAX_DECODE_BATCH, linear_compute

D_INNER, D_MODEL, D_FF = 3200, 1600, 5504
EPS = 1e-6


def _check_batch(batch: int) -> None:
    if not 1 <= batch <= MAX_DECODE_BATCH:
        raise ValueError(f"decode batch must be in 1..{MAX_DECODE_BATCH}, got {batch}")


def _norm_average(attn: te.Tensor, ssm: te.Tensor, w1: te.Tensor, w2: te.Tensor, dim,
                  eps: float) -> te.Tensor:
    """fused[i, j] = (w1[j] * attn[i, j] * r1[i] + w2[j] * ssm[i, j] * r2[i]) / 2 with
    r = rsqrt(mean(x^2) + eps) per row, all fp32 (reference.rms_norm's order: normalise, then
    times the weight)."""
    def stats(x: te.Tensor, name: str) -> te.Tensor:
        k = te.reduce_axis((0, dim), name="k")
        return te.compute((x.shape[0],), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name=name)

    ss1, ss2 = stats(attn, "ss_attn"), stats(ssm, "ss_ssm")
    inv = tirx.const(1.0 / int(getattr(dim, "value", dim)), "float32")
    e = tirx.const(eps, "float32")
    half = tirx.const(0.5, "float32")

    def out(i, j):
        a = f32(w1[j]) * (attn[i, j] * tirx.rsqrt(ss1[i] * inv + e))
        s = f32(w2[j]) * (ssm[i, j] * tirx.rsqrt(ss2[i] * inv + e))
        return (a + s) * half

    return te.compute((attn.shape[0], dim), out, name="fused")


def norm_average(d_inner: int = D_INNER, weight_dtype: str = "float32",
                 eps: float = EPS) -> tirx.PrimFunc:
    """(attn [m, d_inner], ssm [m, d_inner] f32, norm1_w, norm2_w [d_inner] weight_dtype)
    -> fused [m, d_inner] f32; m symbolic. Followed by linear.matmul(d_model, d_inner)."""
    check_dtype(weight_dtype)
    m, d = seq_var("m"), i64(d_inner)
    attn = te.placeholder((m, d), "float32", name="attn")
    ssm = te.placeholder((m, d), "float32", name="ssm")
    w1 = te.placeholder((d,), weight_dtype, name="norm1_w")
    w2 = te.placeholder((d,), weight_dtype, name="norm2_w")
    fused = _norm_average(attn, ssm, w1, w2, d, eps)
    return finish(te.create_prim_func([attn, ssm, w1, w2, fused]), "norm_average",
                  f"norm_average_{d_inner}_{weight_dtype}")


def hybrid_combine_decode(batch: int, d_inner: int = D_INNER, d_model: int = D_MODEL,
                          weight_dtype: str = "float32", eps: float = EPS) -> tirx.PrimFunc:
    """(attn, ssm [batch, d_inner] f32, norm1_w, norm2_w [d_inner], out_w [d_model, d_inner])
    -> y [batch, d_model] f32: out_proj(average of the two RMSNorms), one kernel."""
    check_dtype(weight_dtype)
    _check_batch(batch)
    attn = te.placeholder((batch, d_inner), "float32", name="attn")
    ssm = te.placeholder((batch, d_inner), "float32", name="ssm")
    w1 = te.placeholder((d_inner,), weight_dtype, name="norm1_w")
    w2 = te.placeholder((d_inner,), weight_dtype, name="norm2_w")
    out_w = te.placeholder((d_model, d_inner), weight_dtype, name="out_w")
    fused = _norm_average(attn, ssm, w1, w2, d_inner, eps)
    y = linear_compute(fused, out_w)
    return finish(te.create_prim_func([attn, ssm, w1, w2, out_w, y]), "hybrid_combine_decode",
                  f"hybrid_combine_b{batch}_{d_model}x{d_inner}_{weight_dtype}")


def _gate_up(x: te.Tensor, gate_w: te.Tensor, up_w: te.Tensor) -> te.Tensor:
    g = linear_compute(x, gate_w, name="gate")
    u = linear_compute(x, up_w, name="up")
    return te.compute(g.shape, lambda i, j: silu_f32(g[i, j]) * u[i, j], name="h")


def gate_up_decode(batch: int, d_model: int = D_MODEL, d_ff: int = D_FF,
                   weight_dtype: str = "float32") -> tirx.PrimFunc:
    """(x [batch, d_model] f32, gate_w, up_w [d_ff, d_model]) -> h [batch, d_ff] f32,
    h = silu(x gate^T) * (x up^T). Followed by linear.gemv(batch, d_model, d_ff)."""
    check_dtype(weight_dtype)
    _check_batch(batch)
    x = te.placeholder((batch, d_model), "float32", name="x")
    gate_w = te.placeholder((d_ff, d_model), weight_dtype, name="gate_w")
    up_w = te.placeholder((d_ff, d_model), weight_dtype, name="up_w")
    h = _gate_up(x, gate_w, up_w)
    return finish(te.create_prim_func([x, gate_w, up_w, h]), "gate_up_gemv",
                  f"gate_up_b{batch}_{d_ff}x{d_model}_{weight_dtype}")


def gate_up_prefill(d_model: int = D_MODEL, d_ff: int = D_FF,
                    weight_dtype: str = "float32") -> tirx.PrimFunc:
    """(x [m, d_model] f32, gate_w, up_w [d_ff, d_model]) -> h [m, d_ff] f32, m symbolic.
    Followed by linear.matmul(d_model, d_ff)."""
    check_dtype(weight_dtype)
    m, dm, df = seq_var("m"), i64(d_model), i64(d_ff)
    x = te.placeholder((m, dm), "float32", name="x")
    gate_w = te.placeholder((df, dm), weight_dtype, name="gate_w")
    up_w = te.placeholder((df, dm), weight_dtype, name="up_w")
    h = _gate_up(x, gate_w, up_w)
    return finish(te.create_prim_func([x, gate_w, up_w, h]), "gate_up_matmul",
                  f"gate_up_{d_ff}x{d_model}_{weight_dtype}")


def silu_mul(d_ff: int = D_FF) -> tirx.PrimFunc:
    """(gate [m, d_ff] f32, up [m, d_ff] f32) -> h = silu(gate) * up [m, d_ff] f32, m symbolic:
    the epilogue of the *unfused* FFN (gate and up as two linears; the fusion variant
    `gate_up=unfused`), the same silu as `gate_up_*`."""
    m, f = seq_var("m"), i64(d_ff)
    gate = te.placeholder((m, f), "float32", name="gate")
    up = te.placeholder((m, f), "float32", name="up")
    h = te.compute((m, f), lambda i, j: silu_f32(gate[i, j]) * up[i, j], name="h")
    return finish(te.create_prim_func([gate, up, h]), "silu_mul", f"silu_mul_{d_ff}")


EXAMPLES = [
    (norm_average, (D_INNER, "bfloat16")),
    (silu_mul, (D_FF,)),
    (hybrid_combine_decode, (1, D_INNER, D_MODEL, "bfloat16")),
    (hybrid_combine_decode, (8, D_INNER, D_MODEL, "float32")),
    (gate_up_decode, (1, D_MODEL, D_FF, "bfloat16")),
    (gate_up_decode, (8, D_MODEL, D_FF, "float32")),
    (gate_up_prefill, (D_MODEL, D_FF, "bfloat16")),
    (gate_up_prefill, (D_MODEL, D_FF, "float32")),
]
