"""RMSNorm, alone and fused with the residual add. Twin: `reference.rms_norm` and
`reference.add_rms_norm` (HymbaRMSNorm: fp32 statistics, cast to the input dtype, times the
weight in the input dtype)."""

from __future__ import annotations

from tvm import te, tirx

from .common import check_dtype, f32, finish, seq_var
from .fastmath import round_to_bf16


def normalise(x: te.Tensor, w: te.Tensor, dim: int, eps: float, dtype: str, name: str) -> te.Tensor:
    """HymbaRMSNorm of the rows of x [rows, dim]: blocks `<name>_ss` (fp32 sum of squares per row)
    and `<name>` (the output, in `dtype`); the schedules find them by these names.

    Bit-for-bit the twin's order of operations: mean = sum / dim, y = x * rsqrt(mean + eps) in
    fp32, y rounded to `dtype`, then times the weight in `dtype` (a second rounding for bf16)."""
    idx = str(x.shape[0].ty)  # static dims in the row count's index dtype (no int32/int64 mix)
    k = te.reduce_axis((tirx.IntImm(idx, 0), tirx.IntImm(idx, dim)), name="k")
    ss = te.compute((x.shape[0],), lambda i: te.sum(f32(x[i, k]) * f32(x[i, k]), axis=k), name=f"{name}_ss")
    count = tirx.const(float(dim), "float32")

    def out(i, j):
        y = f32(x[i, j]) * tirx.rsqrt(ss[i] / count + tirx.const(eps, "float32"))
        if dtype == "float32":
            return w[j] * y
        # Both roundings explicit: TVM keeps an intermediate bf16 buffer (the lm_head's
        # normalised rows) in fp32 and drops the rounding of its stores.
        return tirx.Cast(dtype, round_to_bf16(f32(w[j]) * round_to_bf16(y)))

    return te.compute((x.shape[0], tirx.IntImm(idx, dim)), out, name=name)


_normalise = normalise  # the earlier private name


def rmsnorm(dim: int, dtype: str = "float32", eps: float = 1e-6) -> tirx.PrimFunc:
    """y[n, dim] = w * cast(x * rsqrt(mean(x^2) + eps)); x [n, dim], w [dim], n symbolic."""
    check_dtype(dtype)
    n = seq_var()
    d = tirx.IntImm(str(n.ty), dim)
    x = te.placeholder((n, d), dtype, name="x")
    w = te.placeholder((d,), dtype, name="w")
    y = normalise(x, w, dim, eps, dtype, "y")
    return finish(te.create_prim_func([x, w, y]), "rmsnorm", f"rmsnorm_{dim}_{dtype}")


def add_rmsnorm(dim: int, dtype: str = "float32", eps: float = 1e-6) -> tirx.PrimFunc:
    """h = x + residual, y = rmsnorm(h): (x, residual, w) -> (h [n, dim], y [n, dim])."""
    check_dtype(dtype)
    n = seq_var()
    d = tirx.IntImm(str(n.ty), dim)
    x = te.placeholder((n, d), dtype, name="x")
    r = te.placeholder((n, d), dtype, name="residual")
    w = te.placeholder((d,), dtype, name="w")
    h = te.compute((n, d), lambda i, j: x[i, j] + r[i, j], name="h")
    y = normalise(h, w, dim, eps, dtype, "y")
    return finish(te.create_prim_func([x, r, w, h, y]), "add_rmsnorm", f"add_rmsnorm_{dim}_{dtype}")


EXAMPLES = [
    (rmsnorm, (1600, "bfloat16")),
    (rmsnorm, (3200, "float32")),
    (add_rmsnorm, (1600, "bfloat16")),
    (add_rmsnorm, (1600, "float32")),
]
