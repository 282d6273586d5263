"""Attention cases at Hymba-1.5B sizes: 25 q heads, 5 kv heads, q/k dim 64, v dim 128, 128 meta
tokens, window 1024, batch 1. Baseline: `F.scaled_dot_product_attention` (eager PyTorch's best
attention) with the equivalent boolean mask and `enable_gqa=True` for prefill and decode, and
the reference RoPE path (`rope_cos_sin` + `apply_rope`) for rope."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hymba_compile.ir.attention import (HYMBA_BASE, attention_decode_global, attention_decode_sliding,
                          attention_prefill, rope_qkv)

from ...build import build_kernel, knobbed
from ...reference import apply_rope, rope_cos_sin
from ..kernels import DTYPES, KernelCall, KernelCase, Prepared, nbytes

H, KV, DQ, DV, META, WINDOW = 25, 5, 64, 128, 128, 1024
# the numerical checks' heads: the same head dims and GQA group (25 / 5 = 5 q heads per kv head)
SMALL_H, SMALL_KV = 5, 1


def visible_pairs(length: int, window: int | None, meta: int = META) -> int:
    """(query, key) pairs a prefill attends to per head: key j <= query i, and for a window
    i - j <= window or j < meta (ir/attention.py's mask, no pads)."""
    if window is None:
        return length * (length + 1) // 2
    return sum(min(i, window) + 1 + max(0, min(meta, i - window)) for i in range(length))


def attention_flops(pairs: int) -> int:
    """The two matmuls, q k^T and p v, over `pairs` (query, key) pairs of every q head (the
    FlashAttention convention: the softmax is not counted)."""
    return 2 * pairs * (DQ + DV) * H


def _prefill(name: str, length: int, window: int | None, target: dict):
    """Prefill over `length` packed tokens (meta included), fp32."""
    def setup() -> Prepared:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, H, length, DQ, generator=g)
        k = torch.randn(1, KV, length, DQ, generator=g)
        v = torch.randn(1, KV, length, DV, generator=g)
        pads = torch.zeros(1, dtype=torch.int32)
        out = torch.empty(1, length, H * DV)
        kern = build_kernel(knobbed(attention_prefill, 1, H, KV, DQ, DV, window, META, "float32"))
        i = torch.arange(length)[:, None]
        j = torch.arange(length)[None]
        if window is None:
            def baseline():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)
        else:
            mask = (j <= i) & ((i - j <= window) | (j < META))

            def baseline():
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)
        return Prepared(ours=lambda: (kern(q, k, v, pads, out), out)[1].view(1, length, H, DV),
                        baseline=baseline)
    def bytes_moved() -> int:  # q, k, v, pads in; out
        return nbytes("float32", H * length * DQ + KV * length * (DQ + DV) + length * H * DV) + \
            nbytes("int32", 1)

    def flops() -> int:
        return attention_flops(visible_pairs(length, window))

    kind = f"W={window} meta={META}" if window is not None else "causal"
    base = "F.sdpa(" + ("is_causal" if window is None else "bool mask") + ", enable_gqa)"
    small_window = None if window is None else 8
    return KernelCase(name, f"S={length} {kind} {H}/{KV}x{DQ}/{DV} fp32", base, setup, target=target,
                      kernels=(KernelCall(attention_prefill,
                                          (1, H, KV, DQ, DV, window, META, "float32"),
                                          small_args=(1, SMALL_H, SMALL_KV, DQ, DV, small_window,
                                                      4, "float32"),
                                          dims={"Sq": 40, "S": 40}),),
                      bytes_moved=bytes_moved, flops=flops)


def _decode(name: str, window: int | None, length: int, dtype: str, capacity: int = 8192 + META):
    """One query over a full cache: meta + the whole ring (sliding) or `length` tokens (global)."""
    def setup() -> Prepared:
        t = DTYPES[dtype]
        g = torch.Generator().manual_seed(0)
        cap = META + window if window is not None else capacity
        n = META + window if window is not None else length
        q = torch.randn(1, H, 1, DQ, generator=g).to(t)
        kc = torch.randn(1, KV, cap, DQ, generator=g).to(t)
        vc = torch.randn(1, KV, cap, DV, generator=g).to(t)
        out = torch.empty(1, 1, H * DV, dtype=t)
        if window is not None:
            kern = build_kernel(knobbed(attention_decode_sliding, 1, H, KV, DQ, DV, window, META, dtype))
            count = torch.tensor([window], dtype=torch.int32)
        else:
            kern = build_kernel(knobbed(attention_decode_global, 1, H, KV, DQ, DV, capacity, dtype))
            count = torch.tensor([length], dtype=torch.int32)
        k_live, v_live = kc[:, :, :n], vc[:, :, :n]  # every live slot is visible at decode

        def baseline():
            return F.scaled_dot_product_attention(q, k_live, v_live, enable_gqa=True)
        return Prepared(ours=lambda: (kern(q, kc, vc, count, out), out)[1].view(1, H, 1, DV),
                        baseline=baseline)
    n = META + window if window is not None else length

    def bytes_moved() -> int:  # q, the n live cache rows of k and v, the count in; out
        return nbytes(dtype, H * DQ + KV * n * (DQ + DV) + H * DV) + nbytes("int32", 1)

    def flops() -> int:
        return attention_flops(n)

    if window is not None:
        call = KernelCall(attention_decode_sliding, (1, H, KV, DQ, DV, window, META, dtype),
                          small_args=(1, SMALL_H, SMALL_KV, DQ, DV, 16, 4, dtype),
                          ranges={"nvalid": (1, 16)})
    else:
        call = KernelCall(attention_decode_global, (1, H, KV, DQ, DV, capacity, dtype),
                          small_args=(1, SMALL_H, SMALL_KV, DQ, DV, 40, dtype),
                          ranges={"nvalid": (1, 40)})
    kind = f"ring meta {META} + W {window}" if window is not None else f"global len {length}"
    return KernelCase(name, f"B=1 {kind} ({n} keys) {dtype}", "F.sdpa(enable_gqa)", setup,
                      memory_bound=True, target={"ratio": 1.0}, kernels=(call,),
                      bytes_moved=bytes_moved, flops=flops)


def _rope(length: int, dtype: str):
    rows = H * DQ + KV * (DQ + DV) + 2 * 3200  # an owner layer's in_proj width (8960)

    def setup() -> Prepared:
        t = DTYPES[dtype]
        g = torch.Generator().manual_seed(0)
        proj = torch.randn(1, length, rows, generator=g).to(t)
        pos = torch.arange(length, dtype=torch.int32)[None]
        q = torch.empty(1, H, length, DQ, dtype=t)
        k = torch.empty(1, KV, length, DQ, dtype=t)
        v = torch.empty(1, KV, length, DV, dtype=t)
        kern = build_kernel(knobbed(rope_qkv, 1, H, KV, DQ, DV, rows, HYMBA_BASE, True, dtype))

        def baseline():  # the reference: cos/sin, heads split, rotate q and k (v stays a view)
            cos, sin = rope_cos_sin(pos.long(), DQ, HYMBA_BASE, t)
            qh = proj[..., : H * DQ].view(1, length, H, DQ).transpose(1, 2)
            kh = proj[..., H * DQ: (H + KV) * DQ].view(1, length, KV, DQ).transpose(1, 2)
            apply_rope(kh, cos, sin)
            return apply_rope(qh, cos, sin)
        return Prepared(ours=lambda: (kern(proj, pos, q, k, v), q)[1], baseline=baseline)

    def bytes_moved() -> int:  # the q, k, v columns of proj and the positions in; q, k, v out
        return nbytes(dtype, 2 * length * (H * DQ + KV * (DQ + DV))) + nbytes("int32", length)

    def flops() -> int:  # x cos -/+ y sin per rotated element; angle, cos, sin per frequency
        return 3 * length * (H + KV) * DQ + 3 * length * DQ // 2

    small_rows = SMALL_H * DQ + SMALL_KV * (DQ + DV) + 32
    return KernelCase("rope", f"S={length} q {H}x{DQ}, k {KV}x{DQ}, v {KV}x{DV} {dtype}",
                      "reference.rope_cos_sin + apply_rope", setup, target={"ratio": 1.0},
                      kernels=(KernelCall(rope_qkv, (1, H, KV, DQ, DV, rows, HYMBA_BASE, True, dtype),
                                          small_args=(1, SMALL_H, SMALL_KV, DQ, DV, small_rows,
                                                      HYMBA_BASE, True, dtype),
                                          dims={"S": 5}, ranges={"pos": (0, 8191)}),),
                      bytes_moved=bytes_moved, flops=flops)


def cases() -> list[KernelCase]:
    return [
        _prefill("attention_swa_prefill", 4096, WINDOW, {"ratio": 2.0}),
        _prefill("attention_global_prefill", 1152, None, {"ratio": 1.0}),
        _decode("attention_swa_decode", WINDOW, 0, "float32"),
        _decode("attention_swa_decode", WINDOW, 0, "bfloat16"),
        _decode("attention_global_decode", None, 4096, "float32"),
        _decode("attention_global_decode", None, 4096, "bfloat16"),
        _rope(4096, "float32"),
        _rope(1, "float32"),
    ]
