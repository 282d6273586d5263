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


def let(value: tirx.PrimExpr, body) -> tirx.PrimExpr:
    """body(v) with a float32 v bound once to `value` (a Let). The fast-math helpers repeat their
    argument many times; without the binding the expression trees multiply (compiles 10x slower).
    Two TVM 0.27 bf16-legaliser traps (both give wrong numbers, no error): a Let's *value* must not
    load a bf16 buffer (loads there are not rewritten), and a Let must not sit under a cast to
    bf16 (the cast's operand is repeated, the Let variable bound twice). Hence the float32 locals
    dx and Al, and no Let in the output (cast) expressions."""
    v = tirx.Var("v", "float32")
    return tirx.Let(v, value, body(v))


LOG2E = 1.4426950408889634
# 2^r on [-1/2, 1/2], degree 5, relative-error fit (max 9e-8 in exact arithmetic, 1.9e-7 =
# ~2 ulp evaluated in float32 by Horner), constant term 1.
_EXP2_POLY = (1.326471508264001e-3, 9.671514602856219e-3, 5.550733794098353e-2,
              2.4022242049527515e-1, 6.93146977558952e-1)


def exp2_nonpos_f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """2^x for x <= 0: the scan's decays exp(delta A) = 2^(delta A log2 e), with A log2 e taken
    once per scan, and softplus' exp(-|x|). Cheaper than fastmath.exp_f32 (which the scan would
    call N*D times per token, and which is bound on the FMA pipes): the base-2 argument needs no
    ln2 reduction (r = x - round(x) is exact), a degree-5 polynomial, no upper clamp, and 2^n is
    added to the exponent bits of p(r) in [0.7, 1.42] instead of multiplied. Max relative error
    ~2e-7 (plus the argument's own rounding, |x| * 6e-8). Clamped below at -125 (2^-125, not a
    denormal)."""
    def body(v):
        v = tirx.max(v, _f32(-125.0))
        n = tirx.floor(v + _f32(0.5))
        r = v - n
        p = _f32(_EXP2_POLY[0])
        for c in _EXP2_POLY[1:]:
            p = p * r + _f32(c)
        p = p * r + _f32(1.0)
        bits = tirx.reinterpret("int32", p) + tirx.shift_left(tirx.Cast("int32", n),
                                                               tirx.const(23, "int32"))
        return tirx.reinterpret("float32", bits)

    return let(x, body)


def log1p_f32(t: tirx.PrimExpr) -> tirx.PrimExpr:
    """log(1 + t) for 0 <= t <= 1, without libm: 2 atanh(s) with s = t / (2 + t) <= 1/3, the odd
    series to s^17 (truncation < 1e-9, relative accuracy kept for tiny t). Vectorises."""
    def series(s):
        s2 = s * s
        p = _f32(2.0 / 17)
        for k in (15, 13, 11, 9, 7, 5, 3):
            p = p * s2 + _f32(2.0 / k)
        return (p * s2 + _f32(2.0)) * s

    return let(t, lambda tv: let(tv / (_f32(2.0) + tv), series))


def softplus_f32(x: tirx.PrimExpr, threshold: float = 20.0) -> tirx.PrimExpr:
    """torch softplus (beta 1, threshold 20): x above the threshold, else
    max(x, 0) + log1p(exp(-|x|)), which equals log1p(exp(x)) and never overflows. Plain
    arithmetic: libm's log1pf is a scalar call per element that also stops the loop around it
    from vectorising (it made the scan 3x slower)."""
    return let(x, lambda v: tirx.Select(
        v > _f32(threshold), v,
        tirx.max(v, _f32(0.0)) + log1p_f32(exp2_nonpos_f32(tirx.abs(v) * _f32(-LOG2E)))))


def round_to_bf16(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """A float32 expression rounded to the nearest bfloat16 value (ties to even), kept in float32;
    torch's float -> bfloat16 conversion written on the bits. NaN stays NaN.

    Written out in integer ops because TVM 0.27's bf16 legalisation computes in fp32 and drops
    casts it considers redundant: Cast(float32, Cast(bfloat16, x)) folds back to x, `w * Cast(bf16,
    y)` becomes one fp32 multiply rounded once, and stores into an intermediate bf16 buffer are
    not rounded. torch rounds y, then the product; kernels that must match bf16 math call this."""
    u = tirx.reinterpret("uint32", x)
    lsb = (u >> tirx.const(16, "uint32")) & tirx.const(1, "uint32")
    r = (u + tirx.const(0x7FFF, "uint32") + lsb) & tirx.const(0xFFFF0000, "uint32")
    return tirx.Select(tirx.isnan(x), x, tirx.reinterpret("float32", r))
