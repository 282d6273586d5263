"""Evaluate integer (and float) TIR expressions on the host: launch extents, scratch sizes and
scalar arguments of a lowered kernel, or a loop bound of a scheduled PrimFunc (a test reads the
flash prefill's key-loop bound this way). Vars come from a dict; loads from buffers read in an
extent (e.g. a row's pad count) from env[("buffer", name)]."""

from __future__ import annotations

import math
import re

from tvm import tirx
from tvm.ir.expr import Call, TensorLoad


def dtype_of(expr) -> str:
    """The dtype of a scalar PrimExpr ("handle" for pointers)."""
    return str(getattr(expr.ty, "dtype", "handle"))


def op_name(expr) -> str | None:
    return expr.op.name if isinstance(expr, Call) and hasattr(expr.op, "name") else None


def _trunc_div(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cast(dtype: str, v):
    if dtype.startswith("float"):
        return float(v)
    if dtype == "bool":
        return bool(v)
    bits = int(re.sub(r"\D", "", dtype) or 64)
    v = int(v) & ((1 << bits) - 1)
    return v - (1 << bits) if dtype.startswith("int") and v >= 1 << (bits - 1) else v


_BINARY = {
    tirx.Add: lambda a, b: a + b, tirx.Sub: lambda a, b: a - b, tirx.Mul: lambda a, b: a * b,
    tirx.FloorDiv: lambda a, b: a // b, tirx.FloorMod: lambda a, b: a % b,
    tirx.Min: min, tirx.Max: max,
    tirx.EQ: lambda a, b: a == b, tirx.NE: lambda a, b: a != b, tirx.LT: lambda a, b: a < b,
    tirx.LE: lambda a, b: a <= b, tirx.GT: lambda a, b: a > b, tirx.GE: lambda a, b: a >= b,
    tirx.And: lambda a, b: bool(a and b), tirx.Or: lambda a, b: bool(a or b),
}
_CALLS = {
    "tirx.shift_left": lambda a, b: a << b, "tirx.shift_right": lambda a, b: a >> b,
    "tirx.bitwise_and": lambda a, b: a & b, "tirx.bitwise_or": lambda a, b: a | b,
    "tirx.bitwise_xor": lambda a, b: a ^ b, "tirx.likely": lambda a: a,
}


def evaluate(expr, env: dict, lets: dict | None = None):
    """The value (int, float or bool) of a PrimExpr, with vars from `env` (var -> value) or
    computed from `lets` (var -> expr, memoised into env)."""
    if isinstance(expr, (int, float)):
        return expr
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, tirx.FloatImm):
        return float(expr.value)
    if isinstance(expr, tirx.Var):
        if expr in env:
            return env[expr]
        if lets is not None and expr in lets:
            env[expr] = evaluate(lets[expr], env, lets)
            return env[expr]
        raise ValueError(f"unbound variable {expr.name!r} in a launch or allocation expression")
    ev = lambda e: evaluate(e, env, lets)  # noqa: E731
    kind = type(expr)
    if kind in _BINARY:
        return _BINARY[kind](ev(expr.a), ev(expr.b))
    if kind is tirx.Div:
        a, b = ev(expr.a), ev(expr.b)
        return a / b if isinstance(a, float) or isinstance(b, float) else _trunc_div(a, b)
    if kind is tirx.Mod:
        a, b = ev(expr.a), ev(expr.b)
        return math.fmod(a, b) if isinstance(a, float) else a - b * _trunc_div(a, b)
    if kind is tirx.Not:
        return not ev(expr.a)
    if kind is tirx.Select:
        return ev(expr.true_value) if ev(expr.condition) else ev(expr.false_value)
    if kind is tirx.Cast:
        return _cast(dtype_of(expr), ev(expr.value))
    if kind is tirx.Let:
        return evaluate(expr.body, {**env, expr.var: ev(expr.value)}, lets)
    if kind in (tirx.BufferLoad, TensorLoad):  # env[("buffer", name)]: values read in an extent
        buffer = expr.buffer if kind is tirx.BufferLoad else expr.source
        name = str(buffer.name)
        if ("buffer", name) not in env:
            raise ValueError(f"buffer {name!r} is read in the expression; give its values")
        return env[("buffer", name)][tuple(ev(i) for i in expr.indices)]
    op = op_name(expr)
    if op == "tirx.if_then_else":
        return ev(expr.args[1]) if ev(expr.args[0]) else ev(expr.args[2])
    if op in _CALLS:
        return _CALLS[op](*[ev(a) for a in expr.args])
    raise NotImplementedError(f"cannot evaluate {kind.__name__} {expr} on the host")
