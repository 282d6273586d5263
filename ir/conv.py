"""Causal depthwise conv1d + bias + SiLU of the SSM branch, for prefill and for one decode step.
Twins: `reference.causal_conv1d` + `reference.conv_state_after` (prefill) and
`reference.causal_conv1d_step` (decode) [spec §3.3 step 1, §4.3 step 1].

Layout: **channels-last** throughout, the channel axis C contiguous (the one a CPU vectorises and
a GPU coalesces):
  x, y    [batch, L, C]  as the in_proj output [T, channels] gives them (the reference and the
                         official code transpose to [b, C, T] first; here nothing is transposed)
  w       [K, C]         taps-major: conv1d.weight [C, 1, K] as w[:, 0, :].T.contiguous(), once
                         at load; tap K-1 multiplies the current token
  bias    [C]
  state   [batch, K, C]  the last K raw inputs, oldest first = the last K rows of x (the
                         reference's [batch, C, K] transposed), in the activation dtype
Batch and L are symbolic. Math is float32 inside (inputs upcast, the output cast back to the
activation dtype), like the reference. Every tensor must be contiguous and 64-byte aligned (its own
allocation, not an offset view): TVM emits aligned vector loads, and a misaligned pointer crashes.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.script import tirx as T

from .common import check_dtype, columns_of, f32, finish, seq_var
from .fastmath import silu_f32


def causal_conv1d(channels: int, width: int = 4, dtype: str = "float32",
                  wdtype: str | None = None, with_state: bool = False) -> tirx.PrimFunc:
    """Prefill: (x [b, L, C], w [K, C], bias [C]) -> (y [b, L, C], state [b, K, C]).

    y[b, t, c] = silu(bias[c] + sum_k w[k, c] * x[b, t - K + 1 + k, c]) with x = 0 before t = 0;
    state[b, k, c] = x[b, L - K + k, c], zero where L - K + k < 0 (the last K raw inputs,
    zero-padded on the left). x, y, state in `dtype`; w, bias in `wdtype` (default `dtype`).

    `with_state`: the chunk continues a sequence, (x, w, bias, state_in [b, K, C]) -> (y, state):
    the inputs before t = 0 are the last rows of state_in (the state after the earlier tokens,
    e.g. the meta tokens) instead of zeros, and the new state is the last K rows of
    [state_in; x]."""
    check_dtype(dtype)
    wdtype = check_dtype(wdtype or dtype)
    k_ = width
    batch, n = seq_var("batch"), seq_var("n")
    x = te.placeholder((batch, n, channels), dtype, name="x")
    w = te.placeholder((k_, channels), wdtype, name="w")
    bias = te.placeholder((channels,), wdtype, name="bias")
    prior = te.placeholder((batch, k_, channels), dtype, name="state_in") if with_state else None

    def raw(b, src, c, cast=lambda v: v):
        """cast(x at sequence index src), src < 0 being before the chunk (zero, or state_in)."""
        inside = cast(x[b, tirx.max(src, 0), c])
        if prior is None:
            zero = tirx.const(0.0, "float32" if cast is f32 else dtype)
            return tirx.Select(src >= 0, inside, zero)
        # Select on clamped (always in-bounds) loads: no branch, so the block vectorises cleanly
        before = cast(prior[b, tirx.min(tirx.max(src + k_, 0), k_ - 1), c])
        return tirx.Select(src >= 0, inside, before)

    def tap(b, t, c, k):
        return raw(b, t + (k - k_ + 1), c, f32) * f32(w[k, c])

    def pre(b, t, c):
        acc = f32(bias[c])
        for k in range(k_):  # the K taps written out: an injective block that vectorises
            acc = acc + tap(b, t, c, k)
        return acc

    # the pre-activation as its own block ("taps"): CPU rules inline it into y (one expression
    # that vectorises), the GPU rule keeps it in a register so SiLU does not repeat the sum
    taps = te.compute((batch, n, channels), pre, name="taps")
    y = te.compute((batch, n, channels), lambda b, t, c: silu_cast(taps[b, t, c], dtype), name="y")
    state = te.compute((batch, k_, channels), lambda b, k, c: raw(b, n + (k - k_), c), name="state")
    inputs = [x, w, bias] + ([prior] if with_state else [])
    func = te.create_prim_func([*inputs, y, state])
    tag = "_cont" if with_state else ""
    return finish(func, "causal_conv1d", f"causal_conv1d{tag}_{channels}_k{width}_{dtype}_{wdtype}")


def causal_conv1d_step(channels: int, width: int = 4, dtype: str = "float32",
                       wdtype: str | None = None, *,
                       x_columns: tuple[int, int] | None = None) -> tirx.PrimFunc:
    """Decode: (state [b, K, C], x [b, C], w [K, C], bias [C]) -> y [b, C]; `state` is updated
    **in place** (shifted by one token, x appended), so the caller's cache tensor advances.

    y[b, c] = silu(bias[c] + sum_k w[k, c] * new_state[b, k, c]). state, x, y in `dtype`;
    w, bias in `wdtype` (default `dtype`). x_columns = (row width, offset): x is the columns
    [offset, offset + C) of a wider [b, row width] buffer (the in_proj output, read in place
    instead of sliced out by another kernel)."""
    check_dtype(dtype)
    wdtype = check_dtype(wdtype or dtype)
    C, K = channels, width
    XW, XO = columns_of(x_columns, C, "x_columns")

    def to32(v):
        return v if dtype == "float32" else T.Cast("float32", v)

    def w32(v):
        return v if wdtype == "float32" else T.Cast("float32", v)

    @T.prim_func(s_tir=True)
    def step(state_h: T.handle, x_h: T.handle, w_h: T.handle, bias_h: T.handle, y_h: T.handle):
        nb = T.int64()
        state = T.match_buffer(state_h, (nb, K, C), dtype)
        x = T.match_buffer(x_h, (nb, XW), dtype)
        w = T.match_buffer(w_h, (K, C), wdtype)
        bias = T.match_buffer(bias_h, (C,), wdtype)
        y = T.match_buffer(y_h, (nb, C), dtype)
        for b, c in T.grid(nb, C):
            with T.sblock("step"):
                vb, vc = T.axis.remap("SS", [b, c])
                T.reads(state[vb, 0:K, vc], x[vb, XO + vc], w[0:K, vc], bias[vc])
                T.writes(state[vb, 0:K, vc], y[vb, vc])
                # the output first (it reads the old state), then the in-place shift
                y[vb, vc] = silu_cast(w32(bias[vc]) + _taps(state, w, vb, vc, K, to32, w32)
                                      + to32(x[vb, XO + vc]) * w32(w[K - 1, vc]), dtype)
                for k in T.serial(K - 1):
                    state[vb, k, vc] = state[vb, k + 1, vc]
                state[vb, K - 1, vc] = x[vb, XO + vc]

    cols = f"_x{XW}o{XO}" if x_columns is not None else ""
    return finish(step, "causal_conv1d_step",
                  f"causal_conv1d_step_{channels}_k{width}_{dtype}_{wdtype}{cols}")



def _cast(x: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    return x if dtype == "float32" else tirx.Cast(dtype, x)


def silu_cast(x: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """cast(silu(x)) for a float32 x. (No Let binding here: TVM 0.27's bf16 legaliser repeats the
    operand of a float32->bf16 cast, and a Let inside it ends up bound twice: wrong code.)"""
    return _cast(silu_f32(x), dtype)


def _taps(state, w, b, c, k_, to32, w32):
    """sum_{k < K-1} state[b, k + 1, c] * w[k, c]: the shifted old state against taps 0..K-2."""
    acc = tirx.const(0.0, "float32")
    for k in range(k_ - 1):
        acc = acc + to32(state[b, k + 1, c]) * w32(w[k, c])
    return acc


EXAMPLES = [
    (causal_conv1d, (3200, 4, "float32")),
    (causal_conv1d, (3200, 4, "bfloat16")),
    (causal_conv1d, (3200, 4, "float32", "bfloat16", True)),  # after the meta tokens
    (causal_conv1d_step, (3200, 4, "float32")),
    (causal_conv1d_step, (3200, 4, "bfloat16")),
]
