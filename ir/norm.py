"""RMSNorm, alone and fused with the residual add. Twin: `reference.rms_norm` and
`reference.add_rms_norm` (HymbaRMSNorm: fp32 statistics, cast to the input dtype, times the
weight in the input dtype)."""

from __future__ import annotations

from tvm import te, tirx

from .common import check_dtype, f32, finish, seq_var


def _normalise(x: te.Tensor, w: te.Tensor, dim: int, eps: float, dtype: str, name: str) -> te.Tensor:
    k = te.reduce_axis((0, dim), name="k")
    ss = te.compute((x.shape[0],), lambda i: te.sum(f32(x[i, k]) * f32(x[i, k]), axis=k), name=f"{name}_ss")
    inv = tirx.const(1.0 / dim, "float32")

    def out(i, j):
        y = f32(x[i, j]) * tirx.rsqrt(ss[i] * inv + tirx.const(eps, "float32"))
        return w[j] * (y if dtype == "float32" else tirx.Cast(dtype, y))

    return te.compute((x.shape[0], dim), out, name=name)


def rmsnorm(dim: int, dtype: str = "float32", eps: float = 1e-6) -> tirx.PrimFunc:
    """y[n, dim] = w * cast(x * rsqrt(mean(x^2) + eps)); x [n, dim], w [dim], n symbolic."""
    check_dtype(dtype)
    n = seq_var()
    x = te.placeholder((n, dim), dtype, name="x")
    w = te.placeholder((dim,), dtype, name="w")
    y = _normalise(x, w, dim, eps, dtype, "y")
    return finish(te.create_prim_func([x, w, y]), "rmsnorm", f"rmsnorm_{dim}_{dtype}")


def add_rmsnorm(dim: int, dtype: str = "float32", eps: float = 1e-6) -> tirx.PrimFunc:
    """h = x + residual, y = rmsnorm(h): (x, residual, w) -> (h [n, dim], y [n, dim])."""
    check_dtype(dtype)
    n = seq_var()
    x = te.placeholder((n, dim), dtype, name="x")
    r = te.placeholder((n, dim), dtype, name="residual")
    w = te.placeholder((dim,), dtype, name="w")
    h = te.compute((n, dim), lambda i, j: x[i, j] + r[i, j], name="h")
    y = _normalise(h, w, dim, eps, dtype, "y")
    return finish(te.create_prim_func([x, r, w, h, y]), "add_rmsnorm", f"add_rmsnorm_{dim}_{dtype}")
