"""Scalar math as TIR expressions that vectorise: a polynomial exp (no libm call), and the
activations Hymba needs built on it. Target-free: plain arithmetic and bit casts.

`exp_f32` is the Cephes expf scheme: round x/ln2 to n, reduce r = x - n ln2 (two-part ln2),
a degree-6 polynomial for e^r on [-ln2/2, ln2/2], scale by 2^n via the exponent bits.
Max relative error ~2e-7 (about 2 ulp of float32) over [-87, 88].
"""

from __future__ import annotations

from tvm import tirx

_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
         1.6666665459e-1, 5.0000001201e-1)


def _f32(v: float) -> tirx.PrimExpr:
    return tirx.const(v, "float32")


def exp_f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """e^x for a float32 expression; saturates below -87.3 (-> ~0) and above 88.3."""
    x = tirx.max(tirx.min(x, _f32(88.3762626647949)), _f32(-87.3365478515625))
    n = tirx.floor(x * _f32(_LOG2E) + _f32(0.5))
    r = x - n * _f32(_LN2_HI) - n * _f32(_LN2_LO)
    p = _f32(_POLY[0])
    for c in _POLY[1:]:
        p = p * r + _f32(c)
    p = p * r * r + r + _f32(1.0)
    bits = tirx.shift_left(tirx.Cast("int32", n) + tirx.const(127, "int32"), tirx.const(23, "int32"))
    return p * tirx.reinterpret("float32", bits)


def sigmoid_f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """1 / (1 + e^-x)."""
    return _f32(1.0) / (_f32(1.0) + exp_f32(-x))


def silu_f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """x * sigmoid(x) (torch.nn.functional.silu)."""
    return x * sigmoid_f32(x)


def softplus_f32(x: tirx.PrimExpr, threshold: float = 20.0) -> tirx.PrimExpr:
    """log(1 + e^x), and x itself above `threshold` (torch softplus, beta 1, threshold 20,
    as the mamba kernels use)."""
    return tirx.Select(x > _f32(threshold), x, tirx.log1p(exp_f32(x)))
