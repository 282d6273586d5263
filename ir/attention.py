"""Attention of the Hymba mixer: RoPE on the in_proj rows, flash-style prefill attention (sliding
window + meta tokens, or global causal), decode attention over the KV caches, and the in-place
cache writes. Twins: `reference.rope_cos_sin` + `reference.apply_rope` (RoPE),
`reference.visible_keys` + `reference.attention` (prefill and decode) [spec §3.2, §3.4, §3.5, §4.1,
§4.2; pitfalls P1, P2, P12, P13, P15, P16, P17].

Sizes: H query heads, KV key/value heads (GQA: query head h reads kv head h // (H / KV)), q/k head
dim DQ, v head dim DV (Hymba-1.5B: 25, 5, 64, 128), M meta tokens, sliding window W, batch B
(static). Math is float32 everywhere (bf16 inputs are upcast); scale 1/sqrt(DQ).

Layouts (row-major; S = packed prefill length including meta tokens and pads, symbolic):

  proj  [B, S, R]        in_proj output rows, R = in_proj width; head-major slices
                         q = [0, H*DQ), k = [H*DQ, H*DQ + KV*DQ), v = next KV*DV (owner layers;
                         consumer layers have only q there). x and z follow and are ignored.
  positions [B, S] int32 RoPE position of each packed token: meta 0..M-1, the first real token M;
                         pads -1 (they are rotated as position 0; never visible as keys).
  q     [B, H, S, DQ]    roped queries      } written by `rope_qkv`, read by the attention
  k     [B, KV, S, DQ]   roped keys         } kernels (= the reference's layout after
  v     [B, KV, S, DV]   values             } `_heads`/`apply_rope`)
  pads  [B] int32        left pads of each row: the row's packed tokens are
                         [pads; meta; prompt] (reference module docstring), so packed index i
                         holds position i - pads[b].
  out   [B, S, H*DV]     attention output, head-major (= `reference.attention`'s output).
  Decode: the same with S = 1: q [B, H, 1, DQ], out [B, 1, H*DV], k_new [B, KV, 1, DQ],
  v_new [B, KV, 1, DV], pos [B] int32 (position of the new token).

Masks over packed indices (same as `visible_keys` over positions):
  prefill sliding: key j visible to query i iff pads <= j <= i and (i - j <= W or j < pads + M)
                   (W + 1 tokens including itself, plus the meta tokens)
  prefill global : pads <= j <= i
  decode sliding : meta + the last W tokens including the new one (i - j <= W - 1, spec §4.2)
  decode global  : every cached token.
A query that sees no key (a pad) outputs 0.

KV caches (one pair per KV-owning layer; consumers read their producer's), `cache_dtype` bf16 or
fp32, batch rows independent:

  sliding (ring)  k_cache [B, KV, M + W, DQ], v_cache [B, KV, M + W, DV]
                  slot s < M      : meta token at position s (identical for every row)
                  slot M + r      : ring slot r in [0, W) holds the token at position p >= M with
                                    r = (p - M) mod W
                  count [B] int32 : valid ring slots, min(p_last - M + 1, W) where p_last is the
                                    newest position written (the decode query's own position).
                  Because r counts from the first real token (not p mod W), the valid ring
                  slots are always r in [0, count): slots [0, M + count) are exactly the keys of
                  the decode query (meta + the last W tokens), in no particular order.
  global          k_cache [B, KV, CAP, DQ], v_cache [B, KV, CAP, DV], CAP static;
                  slot = position (meta at 0..M-1); length [B] int32 = valid slots = p_last + 1.
  Decode reads only the valid slots (the rest may hold anything, NaN included); k/v are rounded
  to `cache_dtype` when written. Prefill reads every packed row of k/v (pads too, masked): they
  must be finite, as `rope_qkv` makes them from a finite in_proj output.

  Per decode step for a layer: `rope_qkv` (S = 1) -> `kv_cache_write_*` (in place, the new token's
  k/v at `pos`) -> `attention_decode_*` with count = min(pos - M + 1, W) or length = pos + 1.
  After prefill, `kv_cache_fill_*` copies the prefill k/v into the cache (meta + the last W tokens
  of each row for the ring, leaving count = min(S - pads - M, W); every position below CAP for
  global, leaving length = S - pads), in place.

The in-place kernels (`kv_cache_write_*`: k_new, v_new, pos, k_cache, v_cache; `kv_cache_fill_*`:
k, v, pads, k_cache, v_cache) take the caches as their last two arguments and write into them;
they have no other output (Relax: `tensor_ir_inplace_op(..., inplace_indices=[3, 4])`, TVM notes
Part 2 Q2; thread the returned caches on, DCE drops an unused in-place call).

The prefill kernel is flash-style: per (row, head, block of `block_q` queries) it walks key blocks
of `block_k` keys with an online softmax, visiting only blocks that hold a visible key (the meta
blocks and the blocks of the window), so the work per query is O(M + W), not O(S). Masked scores
are a large finite negative and their probabilities are selected to exactly 0, so fully masked
blocks and rows give no NaN. Decode splits each row's keys into `splits` chunks (flash-decoding)
whose partial softmax states are merged at the end, so that batch 1 still has KV x splits
independent pieces of work.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .common import check_dtype, finish
from .fastmath import exp_f32, round_to_bf16

KEY_WALK_ATTR = "hymba.key_walk"  # attention_prefill's key_walk, for schedules to check
REDUCE_ATTR = "hymba.reduce_in"  # attention_decode's reduce_in, for schedules to check
NEG = -3.0e38  # masked score: finite so that max/exp never see inf - inf
NEG_HALF = NEG * 0.5


# ---------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------

def rope_inv_freq_f32(head_dim: int, base: float) -> list[float]:
    """inv_freq of `reference.rope_inv_freq` as float32 values, computed here at build time:
    1 / fp32(pow(fp32(base), fp32(2i / d))), the pow rounded once from float64. This equals
    torch's float32 result except for rare 1-ulp differences in torch's powf."""
    e = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    p = (np.float64(np.float32(base)) ** e.astype(np.float64)).astype(np.float32)
    return [float(x) for x in (np.float32(1.0) / p).astype(np.float32)]


def _table(values: list[float], i: tirx.PrimExpr) -> tirx.PrimExpr:
    """values[i] for an integer expression i as a chain of Selects (folds to a constant once i
    is a constant, e.g. in an unrolled loop). TIR has no constant arrays on this path."""
    expr = tirx.const(values[-1], "float32")
    for idx in range(len(values) - 2, -1, -1):
        expr = tirx.Select(i == idx, tirx.const(values[idx], "float32"), expr)
    return expr


def _rope_parts(num_heads: int, qk_dim: int, base: float, dtype: str):
    """(half, rot, cos_sin_and_q): the pieces of RoPE shared by `rope_qkv` and
    `rope_cache_write`. rot(x0, x1, c, s, sign) = x0 * c + sign * x1 * s in the reference's
    arithmetic (each product and the sum rounded to bf16 for bf16), cast to `dtype`;
    cos_sin_and_q(proj, pos, q, cs, sn, vb, vt) fills cos/sin of the position pos[vb, vt] and
    rotates every q head of token (vb, vt)."""
    if qk_dim % 2:
        raise ValueError(f"qk_dim must be even for rotate_half, got {qk_dim}")
    H, DQ, half = num_heads, qk_dim, qk_dim // 2
    freqs = rope_inv_freq_f32(DQ, base)
    bf16 = dtype == "bfloat16"

    def rnd(x):  # round a float32 value to bf16 precision, staying float32 (identity for fp32)
        return round_to_bf16(x) if bf16 else x

    def rot(x0, x1, c, s, sign):  # x0 * c + sign * x1 * s in the reference's arithmetic
        return T.Cast(dtype, rnd(x0 * c) + sign * rnd(x1 * s))

    @T.macro
    def cos_sin_and_q(proj, pos, q, cs, sn, vb, vt):
        for i in range(half):
            with T.sblock("cos_sin"):
                cs[i] = rnd(T.cos(T.Cast("float32", T.max(pos[vb, vt], 0)) * _table(freqs, i)))
                sn[i] = rnd(T.sin(T.Cast("float32", T.max(pos[vb, vt], 0)) * _table(freqs, i)))
        for h, i in T.grid(H, half):
            with T.sblock("q_rope"):
                q[vb, h, vt, i] = rot(T.Cast("float32", proj[vb, vt, h * DQ + i]),
                                      T.Cast("float32", proj[vb, vt, h * DQ + half + i]),
                                      cs[i], sn[i], T.float32(-1))
                q[vb, h, vt, half + i] = rot(T.Cast("float32", proj[vb, vt, h * DQ + half + i]),
                                             T.Cast("float32", proj[vb, vt, h * DQ + i]),
                                             cs[i], sn[i], T.float32(1))

    return half, rot, cos_sin_and_q


def rope_qkv(batch: int, num_heads: int, num_kv_heads: int, qk_dim: int, v_dim: int, rows: int,
             base: float, owns_kv: bool = True, dtype: str = "float32") -> tirx.PrimFunc:
    """RoPE (rotate_half, all qk_dim dims, inv_freq from `base`) on q and k, heads split out:
    (proj [B, S, rows], positions [B, S] int32) -> q [B, H, S, DQ] (+ k [B, KV, S, DQ],
    v [B, KV, S, DV] for owner layers). S symbolic (1 at decode).

    cos/sin are float32 functions of the integer position (pads, position -1, use 0), rounded to
    `dtype` as the reference and the official code do; in bf16 every product and the sum are
    rounded to bf16 as in the reference's bf16 arithmetic, in fp32 it is plain fp32 math."""
    check_dtype(dtype)
    B, H, KV, DQ, DV = batch, num_heads, num_kv_heads, qk_dim, v_dim
    half, rot, cos_sin_and_q = _rope_parts(H, DQ, base, dtype)
    need = H * DQ + (KV * (DQ + DV) if owns_kv else 0)
    if rows < need:
        raise ValueError(f"rows={rows} is smaller than the q/k/v slices ({need})")
    K0, K1, V0 = H * DQ, H * DQ + half, H * DQ + KV * DQ  # k's first and second halves, v

    if owns_kv:
        @T.prim_func(s_tir=True)
        def rope(proj_h: T.handle, pos_h: T.handle, q_h: T.handle, k_h: T.handle, v_h: T.handle):
            S = T.int64()
            proj = T.match_buffer(proj_h, (B, S, rows), dtype)
            pos = T.match_buffer(pos_h, (B, S), "int32")
            q = T.match_buffer(q_h, (B, H, S, DQ), dtype)
            k = T.match_buffer(k_h, (B, KV, S, DQ), dtype)
            v = T.match_buffer(v_h, (B, KV, S, DV), dtype)
            for b, t in T.grid(T.int64(B), S):
                with T.sblock("token"):
                    vb, vt = T.axis.remap("SS", [b, t])
                    cs = T.sblock_alloc_buffer((half,), "float32", scope="local")
                    sn = T.sblock_alloc_buffer((half,), "float32", scope="local")
                    cos_sin_and_q(proj, pos, q, cs, sn, vb, vt)
                    for h, i in T.grid(KV, half):
                        with T.sblock("k_rope"):
                            k[vb, h, vt, i] = rot(T.Cast("float32", proj[vb, vt, K0 + h * DQ + i]),
                                                  T.Cast("float32", proj[vb, vt, K1 + h * DQ + i]),
                                                  cs[i], sn[i], T.float32(-1))
                            k[vb, h, vt, half + i] = rot(T.Cast("float32", proj[vb, vt, K1 + h * DQ + i]),
                                                         T.Cast("float32", proj[vb, vt, K0 + h * DQ + i]),
                                                         cs[i], sn[i], T.float32(1))
                    for h, e in T.grid(KV, DV):
                        with T.sblock("v_copy"):
                            v[vb, h, vt, e] = proj[vb, vt, V0 + h * DV + e]

        func, tag = rope, "qkv"
    else:
        @T.prim_func(s_tir=True)
        def rope_q(proj_h: T.handle, pos_h: T.handle, q_h: T.handle):
            S = T.int64()
            proj = T.match_buffer(proj_h, (B, S, rows), dtype)
            pos = T.match_buffer(pos_h, (B, S), "int32")
            q = T.match_buffer(q_h, (B, H, S, DQ), dtype)
            for b, t in T.grid(T.int64(B), S):
                with T.sblock("token"):
                    vb, vt = T.axis.remap("SS", [b, t])
                    cs = T.sblock_alloc_buffer((half,), "float32", scope="local")
                    sn = T.sblock_alloc_buffer((half,), "float32", scope="local")
                    cos_sin_and_q(proj, pos, q, cs, sn, vb, vt)

        func, tag = rope_q, "q"
    return finish(func, "rope",
                  f"rope_{tag}_b{B}_h{H}x{KV}_d{DQ}x{DV}_r{rows}_base{base:g}_{dtype}")


# ---------------------------------------------------------------------------------------------
# Prefill attention
# ---------------------------------------------------------------------------------------------

def _check_heads(num_heads: int, num_kv_heads: int) -> int:
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    return num_heads // num_kv_heads


def attention_prefill(batch: int, num_heads: int, num_kv_heads: int, qk_dim: int, v_dim: int,
                      window: int | None, num_meta: int = 0, dtype: str = "float32",
                      block_q: int = 64, block_k: int = 64,
                      key_walk: str = "branch") -> tirx.PrimFunc:
    """Flash attention at prefill: (q [B, H, Sq, DQ], k [B, KV, S, DQ], v [B, KV, S, DV],
    pads [B] int32) -> out [B, Sq, H*DV], S and Sq <= S symbolic. The queries are the last Sq of
    the S packed tokens (query i is packed index S - Sq + i): Sq = S is a whole prefill, Sq < S a
    prompt attending over keys that begin with a cached prefix (the meta tokens).

    window = W: Hymba sliding-window mask (i - j <= W, meta tokens always visible); window =
    None: global causal (num_meta is then irrelevant). block_q / block_k: the query rows and keys
    of one online-softmax step; the key blocks visited are those with a visible key.

    key_walk: how the visited key blocks are found (same blocks, same order, same result):
    "branch" loops over every block from the row's first real key to the query block's last and
    skips the invisible ones with a branch, and masks only blocks not wholly visible (the CPU
    form); "compact" loops over the visited blocks only (the meta blocks, then the window's), sums
    each score in a register and masks it as it is stored, so the loop body has no branch and
    writes each score once, and takes the G query heads of a kv head in one block (G x block_q
    rows per step: each k/v tile serves the group): the form for a GPU, where a branch around
    shared-memory tiles would need barriers under a condition and an accumulation in the shared
    tile a barrier per step."""
    check_dtype(dtype)
    G = _check_heads(num_heads, num_kv_heads)
    B, H, KV, DQ, DV, M = batch, num_heads, num_kv_heads, qk_dim, v_dim, num_meta
    BQ, BK = block_q, block_k
    sliding = window is not None
    W = int(window) if sliding else 0
    if sliding and W < 0:
        raise ValueError("window must be >= 0")
    if key_walk not in ("branch", "compact"):
        raise ValueError(f"key_walk must be 'branch' or 'compact', got {key_walk!r}")
    compact = key_walk == "compact"
    scale = 1.0 / math.sqrt(DQ)

    # Index helpers (int64 block bounds; the per-element mask in int32 so that it vectorises
    # 16 lanes wide). p: the row's first real packed index (its pad count), i0 / i1: the block's
    # first query and one past its last real one, j0: a key block's first key.
    def row_start(pads, vb):
        return T.Cast("int64", pads[vb])

    def key(t, jj, S):  # key jj of key block t, clamped in bounds (masked if beyond)
        return T.min(t * BK + jj, S - 1)

    def block_end(vq, S, Sq):  # one past the block's last real query, as a packed index
        return S - Sq + T.min(vq * BQ + BQ, Sq)

    def block_visited(j0, i0, p):  # the key block holds a key visible to a query of the block
        if compact:
            return True  # the compact walk visits only such blocks: no branch at all
        if not sliding:
            return tirx.const(True)
        return tirx.any(j0 < p + M, j0 + BK - 1 >= i0 - W)

    def walk(p, i0, i1):
        """(first and one-past-last loop step, block index of loop step tc). branch: every
        block in [p // BK, (i1 - 1) // BK]. compact: of those, the meta blocks [t0, tm] and then
        the window's [tw, te], where block t holds a key within the window of query i0 iff
        t >= floor((i0 - W) / BK): exactly the blocks `block_visited` accepts, in order."""
        t0, te = p // BK, (i1 - 1) // BK
        if not compact or not sliding:
            return t0, te + 1, lambda tc: tc
        tm = T.min((p + M - 1) // BK, te)
        nm = T.max(tm - t0 + 1, T.int64(0))
        tw = T.max(T.max(T.floordiv(i0 - W, BK), tm + 1), t0)
        nw = T.max(te - tw + 1, T.int64(0))
        return T.int64(0), nm + nw, lambda tc: T.Select(tc < nm, t0 + tc, tw + tc - nm)

    def block_full(j0, i0, i1, p):  # every key of the block is visible to every query
        causal = tirx.all(j0 >= p, j0 + BK - 1 <= i0)
        if not sliding:
            return causal
        return tirx.all(causal, tirx.any(i1 - 1 - j0 <= W, j0 + BK <= p + M))

    def visible(j, i, p):  # int32: key j visible to query i (packed indices)
        causal = tirx.all(j >= p, j <= i)
        if not sliding:
            return causal
        return tirx.all(causal, tirx.any(i - j <= W, j < p + M))

    # rows of a thread block: the "branch" form takes one query head's BQ queries; the
    # "compact" (GPU) form the G query heads of a kv head together (RQ = G * BQ rows: row ii is
    # head vh * G + ii // BQ at query vq * BQ + ii % BQ), so each k/v tile serves all G heads
    GH = G if compact else 1
    RQ = GH * BQ

    def qhead(vh, ii):
        return vh if GH == 1 else vh * GH + ii // BQ

    def qoff(ii):  # the row's query within the query block
        return ii if GH == 1 else ii % BQ

    def qpos(vq, ii):
        return vq * BQ + qoff(ii)

    def kvhead(vh):
        return vh // G if GH == 1 else vh

    def steps(pads, vb, vq, S, Sq):  # the key loop's range for query block vq of row vb
        return walk(row_start(pads, vb), S - Sq + vq * BQ, block_end(vq, S, Sq))[:2]

    def blk(tc, pads, vb, vq, S, Sq):  # key block of loop step tc (an expression, no Let)
        return walk(row_start(pads, vb), S - Sq + vq * BQ, block_end(vq, S, Sq))[2](tc)

    @T.prim_func(s_tir=True)
    def prefill(q_h: T.handle, k_h: T.handle, v_h: T.handle, pads_h: T.handle, out_h: T.handle):
        S = T.int64()
        Sq = T.int64()
        q = T.match_buffer(q_h, (B, H, Sq, DQ), dtype)
        k = T.match_buffer(k_h, (B, KV, S, DQ), dtype)
        v = T.match_buffer(v_h, (B, KV, S, DV), dtype)
        pads = T.match_buffer(pads_h, (B,), "int32")
        out = T.match_buffer(out_h, (B, Sq, H * DV), dtype)
        for b, h, qb in T.grid(T.int64(B), T.int64(H // GH), (Sq + BQ - 1) // BQ):
            with T.sblock("flash"):
                vb, vh, vq = T.axis.remap("SSS", [b, h, qb])
                qs = T.sblock_alloc_buffer((DQ, RQ), "float32", scope="local")  # q^T * scale
                kt = T.sblock_alloc_buffer((BK, DQ), "float32", scope="local")
                vt = T.sblock_alloc_buffer((BK, DV), "float32", scope="local")
                sc = T.sblock_alloc_buffer((BK, RQ), "float32", scope="local")  # scores, then p
                acc = T.sblock_alloc_buffer((RQ, DV), "float32", scope="local")
                mx = T.sblock_alloc_buffer((RQ,), "float32", scope="local")
                mn = T.sblock_alloc_buffer((RQ,), "float32", scope="local")
                sm = T.sblock_alloc_buffer((RQ,), "float32", scope="local")
                al = T.sblock_alloc_buffer((RQ,), "float32", scope="local")
                for ii in range(RQ):
                    with T.sblock("init_stats"):
                        mx[ii] = T.float32(NEG)
                        sm[ii] = T.float32(0)
                for ii, e in T.grid(RQ, DV):
                    with T.sblock("init_acc"):
                        acc[ii, e] = T.float32(0)
                for d, ii in T.grid(DQ, RQ):
                    with T.sblock("load_q"):
                        qs[d, ii] = T.float32(scale) * T.Cast(
                            "float32", q[vb, qhead(vh, ii), T.min(qpos(vq, ii), Sq - 1), d])
                # the key blocks holding a key visible to the block's queries (`walk`)
                for tc in range(steps(pads, vb, vq, S, Sq)[0], steps(pads, vb, vq, S, Sq)[1]):
                    if block_visited(blk(tc, pads, vb, vq, S, Sq) * BK, S - Sq + vq * BQ,
                                     row_start(pads, vb)):
                        for jj, d in T.grid(BK, DQ):
                            with T.sblock("load_k"):
                                kt[jj, d] = T.Cast("float32", k[vb, kvhead(vh),
                                                                key(blk(tc, pads, vb, vq, S, Sq), jj, S), d])
                        for jj, e in T.grid(BK, DV):
                            with T.sblock("load_v"):
                                vt[jj, e] = T.Cast("float32", v[vb, kvhead(vh),
                                                                key(blk(tc, pads, vb, vq, S, Sq), jj, S), e])
                        if compact:
                            # one pass: each score summed in a register, then masked (no
                            # stores to the shared tile inside the head-dim loop)
                            for jj, ii in T.grid(BK, RQ):
                                with T.sblock("score"):
                                    dot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                                    dot[0] = T.float32(0)
                                    for d in range(DQ):
                                        dot[0] = dot[0] + kt[jj, d] * qs[d, ii]
                                    sc[jj, ii] = T.Select(
                                        visible(T.Cast("int32", blk(tc, pads, vb, vq, S, Sq) * BK)
                                                + jj, T.Cast("int32", S - Sq + vq * BQ) + qoff(ii),
                                                pads[vb]),
                                        dot[0], T.float32(NEG))
                        else:
                            for jj, ii in T.grid(BK, RQ):
                                with T.sblock("score_init"):
                                    sc[jj, ii] = T.float32(0)
                            for jj, d, ii in T.grid(BK, DQ, RQ):
                                with T.sblock("score"):
                                    sc[jj, ii] = sc[jj, ii] + kt[jj, d] * qs[d, ii]
                            if not block_full(blk(tc, pads, vb, vq, S, Sq) * BK, S - Sq + vq * BQ,
                                              block_end(vq, S, Sq), row_start(pads, vb)):
                                for jj, ii in T.grid(BK, RQ):
                                    with T.sblock("mask"):
                                        sc[jj, ii] = T.Select(
                                            visible(T.Cast("int32", blk(tc, pads, vb, vq, S, Sq) * BK) + jj,
                                                    T.Cast("int32", S - Sq + vq * BQ) + qoff(ii), pads[vb]),
                                            sc[jj, ii], T.float32(NEG))
                        if compact:  # running max and sum in a register per query
                            for ii in range(RQ):
                                with T.sblock("max"):
                                    run = T.sblock_alloc_buffer((1,), "float32", scope="local")
                                    run[0] = mx[ii]
                                    for jj in range(BK):
                                        run[0] = T.max(run[0], sc[jj, ii])
                                    al[ii] = exp_f32(mx[ii] - run[0])
                                    mx[ii] = run[0]
                                    sm[ii] = sm[ii] * al[ii]
                        else:
                            for ii in range(RQ):
                                with T.sblock("max_init"):
                                    mn[ii] = mx[ii]
                            for jj, ii in T.grid(BK, RQ):
                                with T.sblock("max"):
                                    mn[ii] = T.max(mn[ii], sc[jj, ii])
                            for ii in range(RQ):
                                with T.sblock("alpha"):
                                    al[ii] = exp_f32(mx[ii] - mn[ii])
                                    mx[ii] = mn[ii]
                                    sm[ii] = sm[ii] * al[ii]
                        for jj, ii in T.grid(BK, RQ):
                            with T.sblock("prob"):
                                sc[jj, ii] = T.Select(sc[jj, ii] > T.float32(NEG_HALF),
                                                      exp_f32(sc[jj, ii] - mx[ii]), T.float32(0))
                        if compact:
                            for ii in range(RQ):
                                with T.sblock("sum"):
                                    tot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                                    tot[0] = sm[ii]
                                    for jj in range(BK):
                                        tot[0] = tot[0] + sc[jj, ii]
                                    sm[ii] = tot[0]
                        else:
                            for jj, ii in T.grid(BK, RQ):
                                with T.sblock("sum"):
                                    sm[ii] = sm[ii] + sc[jj, ii]
                        for ii, e in T.grid(RQ, DV):
                            with T.sblock("rescale"):
                                acc[ii, e] = acc[ii, e] * al[ii]
                        for jj, ii, e in T.grid(BK, RQ, DV):
                            with T.sblock("pv"):
                                acc[ii, e] = acc[ii, e] + sc[jj, ii] * vt[jj, e]
                for ii, e in T.grid(RQ, DV):
                    with T.sblock("store"):
                        if qpos(vq, ii) < Sq:
                            out[vb, qpos(vq, ii), qhead(vh, ii) * DV + e] = T.Cast(dtype, T.Select(
                                sm[ii] > T.float32(0), acc[ii, e] / sm[ii], T.float32(0)))

    kind = f"sw{W}_m{M}" if sliding else "global"
    walk_tag = "_compact" if compact else ""
    func = finish(prefill, "attention_prefill",
                  f"attention_prefill_{kind}_b{B}_h{H}x{KV}_d{DQ}x{DV}_q{BQ}k{BK}{walk_tag}_{dtype}")
    return func.with_attr(KEY_WALK_ATTR, key_walk)


# ---------------------------------------------------------------------------------------------
# Decode attention
# ---------------------------------------------------------------------------------------------

def _decode(kind: str, batch: int, num_heads: int, num_kv_heads: int, qk_dim: int, v_dim: int,
            capacity: int, num_meta: int, dtype: str, cache_dtype: str, splits: int,
            block_k: int, symbol: str, reduce_in: str = "tile") -> tirx.PrimFunc:
    """One query per row over the first n slots of a cache: n = M + count[b] (ring) or
    length[b] (global), clamped to [0, capacity]. reduce_in: "tile" accumulates each score, the
    running max and the sum in the step's scratch tiles (the CPU form: loops that vectorise);
    "registers" in a register per score / query head, each tile element written once (the GPU
    form: no shared-memory accumulation, hence no barrier inside a reduction loop). Same math,
    same order of additions."""
    if reduce_in not in ("tile", "registers"):
        raise ValueError(f"reduce_in must be 'tile' or 'registers', got {reduce_in!r}")
    registers = reduce_in == "registers"
    G = _check_heads(num_heads, num_kv_heads)
    B, H, KV, DQ, DV, M, CAP = batch, num_heads, num_kv_heads, qk_dim, v_dim, num_meta, _cap(capacity)
    NS, BK = splits, block_k
    ring = kind == "sliding"
    scale = 1.0 / math.sqrt(DQ)

    def slot(bnd, t, jj):  # cache slot of key jj of key block t, clamped to the chunk's last
        return T.min(bnd[1] + t * BK + jj, bnd[2] - 1)

    @T.prim_func(s_tir=True)
    def decode(q_h: T.handle, kc_h: T.handle, vc_h: T.handle, n_h: T.handle, out_h: T.handle):
        q = T.match_buffer(q_h, (B, H, 1, DQ), dtype)
        kc = T.match_buffer(kc_h, (B, KV, CAP, DQ), cache_dtype)
        vc = T.match_buffer(vc_h, (B, KV, CAP, DV), cache_dtype)
        nvalid = T.match_buffer(n_h, (B,), "int32")
        out = T.match_buffer(out_h, (B, 1, H * DV), dtype)
        pm = T.sblock_alloc_buffer((B, H, NS), "float32")
        pl = T.sblock_alloc_buffer((B, H, NS), "float32")
        pacc = T.sblock_alloc_buffer((B, H, NS, DV), "float32")
        for b, g, c in T.grid(T.int64(B), T.int64(KV), T.int64(NS)):
            with T.sblock("split"):
                vb, vg, vc_ = T.axis.remap("SSS", [b, g, c])
                qs = T.sblock_alloc_buffer((G, DQ), "float32", scope="local")
                kt = T.sblock_alloc_buffer((DQ, BK), "float32", scope="local")  # k^T tile
                vt = T.sblock_alloc_buffer((BK, DV), "float32", scope="local")
                sc = T.sblock_alloc_buffer((G, BK), "float32", scope="local")
                acc = T.sblock_alloc_buffer((G, DV), "float32", scope="local")
                mx = T.sblock_alloc_buffer((G,), "float32", scope="local")
                mn = T.sblock_alloc_buffer((G,), "float32", scope="local")
                sm = T.sblock_alloc_buffer((G,), "float32", scope="local")
                sn = T.sblock_alloc_buffer((G,), "float32", scope="local")  # registers form
                al = T.sblock_alloc_buffer((G,), "float32", scope="local")
                bnd = T.sblock_alloc_buffer((3,), "int64", scope="local")  # n, start, end
                with T.sblock("bounds"):
                    bnd[0] = T.max(T.min(T.Cast("int64", nvalid[vb]) + (M if ring else 0), CAP),
                                   T.int64(0))
                    # chunk length: ceil(n / NS) rounded up to whole key blocks
                    bnd[1] = vc_ * (((bnd[0] + NS - 1) // NS + BK - 1) // BK * BK)
                    bnd[2] = T.min(bnd[1] + ((bnd[0] + NS - 1) // NS + BK - 1) // BK * BK, bnd[0])
                for gg in range(G):
                    with T.sblock("init_stats"):
                        mx[gg] = T.float32(NEG)
                        sm[gg] = T.float32(0)
                for gg, e in T.grid(G, DV):
                    with T.sblock("init_acc"):
                        acc[gg, e] = T.float32(0)
                for gg, d in T.grid(G, DQ):
                    with T.sblock("load_q"):
                        qs[gg, d] = T.Cast("float32", q[vb, vg * G + gg, 0, d]) * T.float32(scale)
                for t in range(T.max((bnd[2] - bnd[1] + BK - 1) // BK, T.int64(0))):
                    for d, jj in T.grid(DQ, BK):
                        with T.sblock("load_k"):
                            kt[d, jj] = T.Cast("float32", kc[vb, vg, slot(bnd, t, jj), d])
                    for jj, e in T.grid(BK, DV):
                        with T.sblock("load_v"):
                            vt[jj, e] = T.Cast("float32", vc[vb, vg, slot(bnd, t, jj), e])
                    if registers:
                        # each score, the new running max and the new sum in a register, written
                        # once; no block reads and writes the same tile, so a lane predicate
                        # never holds a barrier (a single query head is one lane)
                        for gg, jj in T.grid(G, BK):
                            with T.sblock("score"):
                                dot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                                dot[0] = T.float32(0)
                                for d in range(DQ):
                                    dot[0] = dot[0] + qs[gg, d] * kt[d, jj]
                                sc[gg, jj] = T.Select(bnd[1] + t * BK + jj < bnd[2], dot[0],
                                                      T.float32(NEG))
                        for gg in range(G):
                            with T.sblock("max"):
                                run = T.sblock_alloc_buffer((1,), "float32", scope="local")
                                run[0] = mx[gg]
                                for jj in range(BK):
                                    run[0] = T.max(run[0], sc[gg, jj])
                                mn[gg] = run[0]
                                al[gg] = exp_f32(mx[gg] - run[0])
                        for gg, jj in T.grid(G, BK):
                            with T.sblock("prob"):
                                sc[gg, jj] = T.Select(sc[gg, jj] > T.float32(NEG_HALF),
                                                      exp_f32(sc[gg, jj] - mn[gg]), T.float32(0))
                        for gg in range(G):
                            with T.sblock("sum"):
                                tot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                                tot[0] = sm[gg] * al[gg]
                                for jj in range(BK):
                                    tot[0] = tot[0] + sc[gg, jj]
                                sn[gg] = tot[0]
                        for gg in range(G):
                            with T.sblock("carry"):
                                mx[gg] = mn[gg]
                                sm[gg] = sn[gg]
                    else:
                        for gg, jj in T.grid(G, BK):
                            with T.sblock("score_init"):
                                sc[gg, jj] = T.float32(0)
                        for gg, d, jj in T.grid(G, DQ, BK):
                            with T.sblock("score"):
                                sc[gg, jj] = sc[gg, jj] + qs[gg, d] * kt[d, jj]
                        for gg, jj in T.grid(G, BK):
                            with T.sblock("score_mask"):
                                if bnd[1] + t * BK + jj >= bnd[2]:
                                    sc[gg, jj] = T.float32(NEG)
                        for gg in range(G):
                            with T.sblock("max"):
                                mn[gg] = mx[gg]
                                for jj in range(BK):
                                    mn[gg] = T.max(mn[gg], sc[gg, jj])
                                al[gg] = exp_f32(mx[gg] - mn[gg])
                                mx[gg] = mn[gg]
                                sm[gg] = sm[gg] * al[gg]
                        for gg, jj in T.grid(G, BK):
                            with T.sblock("prob"):
                                sc[gg, jj] = T.Select(sc[gg, jj] > T.float32(NEG_HALF),
                                                      exp_f32(sc[gg, jj] - mx[gg]), T.float32(0))
                        for gg in range(G):
                            with T.sblock("sum"):
                                for jj in range(BK):
                                    sm[gg] = sm[gg] + sc[gg, jj]
                    for gg, e in T.grid(G, DV):
                        with T.sblock("rescale"):
                            acc[gg, e] = acc[gg, e] * al[gg]
                    for gg, jj, e in T.grid(G, BK, DV):
                        with T.sblock("pv"):
                            acc[gg, e] = acc[gg, e] + sc[gg, jj] * vt[jj, e]
                for gg in range(G):
                    with T.sblock("store_stats"):
                        pm[vb, vg * G + gg, vc_] = mx[gg]
                        pl[vb, vg * G + gg, vc_] = sm[gg]
                for gg, e in T.grid(G, DV):
                    with T.sblock("store_acc"):
                        pacc[vb, vg * G + gg, vc_, e] = acc[gg, e]
        for b, h in T.grid(T.int64(B), T.int64(H)):
            with T.sblock("combine"):
                vb, vh = T.axis.remap("SS", [b, h])
                w = T.sblock_alloc_buffer((NS,), "float32", scope="local")
                st = T.sblock_alloc_buffer((2,), "float32", scope="local")  # max, denominator
                o = T.sblock_alloc_buffer((DV,), "float32", scope="local")
                with T.sblock("combine_max"):
                    st[0] = T.float32(NEG)
                    for c in range(NS):
                        st[0] = T.max(st[0], pm[vb, vh, c])
                    st[1] = T.float32(0)
                    for c in range(NS):
                        w[c] = exp_f32(pm[vb, vh, c] - st[0])
                        st[1] = st[1] + w[c] * pl[vb, vh, c]
                for e in range(DV):
                    with T.sblock("combine_init"):
                        o[e] = T.float32(0)
                for c, e in T.grid(NS, DV):
                    with T.sblock("combine_acc"):
                        o[e] = o[e] + w[c] * pacc[vb, vh, c, e]
                for e in range(DV):
                    with T.sblock("combine_out"):
                        out[vb, 0, vh * DV + e] = T.Cast(
                            dtype, T.Select(st[1] > T.float32(0), o[e] / st[1], T.float32(0)))

    return finish(decode, "attention_decode", symbol).with_attr(REDUCE_ATTR, reduce_in)


def attention_decode_sliding(batch: int, num_heads: int, num_kv_heads: int, qk_dim: int,
                             v_dim: int, window: int, num_meta: int, dtype: str = "float32",
                             cache_dtype: str | None = None, splits: int = 4,
                             block_k: int = 32, reduce_in: str = "tile") -> tirx.PrimFunc:
    """Decode on a sliding-window layer: (q [B, H, 1, DQ], k_cache [B, KV, M + W, DQ],
    v_cache [B, KV, M + W, DV], count [B] int32) -> out [B, 1, H*DV].

    Attends to the M meta slots and the first count[b] ring slots (the new token's k/v already
    written): meta + the last W tokens including the new one (decode window, spec §4.2). `splits`
    chunks per row and kv head are reduced separately and merged."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    cap = num_meta + window
    symbol = (f"attention_decode_sw{window}_m{num_meta}_b{batch}_h{num_heads}x{num_kv_heads}"
              f"_d{qk_dim}x{v_dim}_s{splits}k{block_k}{_reduce_tag(reduce_in)}_{dtype}_{cache_dtype}")
    return _decode("sliding", batch, num_heads, num_kv_heads, qk_dim, v_dim, cap, num_meta, dtype,
                   cache_dtype, splits, block_k, symbol, reduce_in)


def attention_decode_global(batch: int, num_heads: int, num_kv_heads: int, qk_dim: int,
                            v_dim: int, capacity: int | None, dtype: str = "float32",
                            cache_dtype: str | None = None, splits: int = 4,
                            block_k: int = 32, reduce_in: str = "tile") -> tirx.PrimFunc:
    """Decode on a global layer: (q [B, H, 1, DQ], k_cache [B, KV, CAP, DQ],
    v_cache [B, KV, CAP, DV], length [B] int32) -> out [B, 1, H*DV]; attends to slots
    [0, length[b]) (every cached token, the new one included)."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    symbol = (f"attention_decode_global_{_cap_tag(capacity)}_b{batch}_h{num_heads}x{num_kv_heads}"
              f"_d{qk_dim}x{v_dim}_s{splits}k{block_k}{_reduce_tag(reduce_in)}_{dtype}_{cache_dtype}")
    return _decode("global", batch, num_heads, num_kv_heads, qk_dim, v_dim, capacity, 0, dtype,
                   cache_dtype, splits, block_k, symbol, reduce_in)


# ---------------------------------------------------------------------------------------------
# Cache writes (in place)
# ---------------------------------------------------------------------------------------------

def _reduce_tag(reduce_in: str) -> str:
    return "_reg" if reduce_in == "registers" else ""


def _cap(capacity: int | None):
    """The cache's slot extent: a static int, or (None) a symbolic int64 var bound by the cache
    tensor's shape at call time, so a growing global cache needs no recompilation."""
    return tirx.Var("capacity", "int64") if capacity is None else capacity


def _cap_tag(capacity: int | None) -> str:
    return "cdyn" if capacity is None else f"c{capacity}"


def _slot(p, num_meta: int, window: int | None):
    """Cache slot of position p: p below the meta prefix or on a global layer; else
    M + (p - M) mod W."""
    if window is None:
        return p
    return T.Select(p < num_meta, p, num_meta + T.floormod(p - num_meta, window))


def _cache_write(batch: int, num_kv_heads: int, qk_dim: int, v_dim: int, capacity: int | None,
                 num_meta: int, window: int | None, dtype: str, cache_dtype: str,
                 symbol: str) -> tirx.PrimFunc:
    B, KV, DQ, DV, CAP, M = batch, num_kv_heads, qk_dim, v_dim, _cap(capacity), num_meta

    def slot(pos, vb):
        return _slot(T.Cast("int64", pos[vb]), M, window)

    @T.prim_func(s_tir=True)
    def write(kn_h: T.handle, vn_h: T.handle, pos_h: T.handle, kc_h: T.handle, vc_h: T.handle):
        kn = T.match_buffer(kn_h, (B, KV, 1, DQ), dtype)
        vn = T.match_buffer(vn_h, (B, KV, 1, DV), dtype)
        pos = T.match_buffer(pos_h, (B,), "int32")
        kc = T.match_buffer(kc_h, (B, KV, CAP, DQ), cache_dtype)
        vc = T.match_buffer(vc_h, (B, KV, CAP, DV), cache_dtype)
        for b, h in T.grid(T.int64(B), T.int64(KV)):
            with T.sblock("write"):
                vb, vh = T.axis.remap("SS", [b, h])
                if pos[vb] >= 0 and slot(pos, vb) < CAP:
                    for d in range(DQ):
                        with T.sblock("write_k"):
                            kc[vb, vh, slot(pos, vb), d] = T.Cast(cache_dtype, kn[vb, vh, 0, d])
                    for e in range(DV):
                        with T.sblock("write_v"):
                            vc[vb, vh, slot(pos, vb), e] = T.Cast(cache_dtype, vn[vb, vh, 0, e])

    return finish(write, "kv_cache_write", symbol)


def kv_cache_write_sliding(batch: int, num_kv_heads: int, qk_dim: int, v_dim: int, window: int,
                           num_meta: int, dtype: str = "float32",
                           cache_dtype: str | None = None) -> tirx.PrimFunc:
    """In place: (k_new [B, KV, 1, DQ], v_new [B, KV, 1, DV], pos [B] int32, k_cache
    [B, KV, M + W, DQ], v_cache [B, KV, M + W, DV]); the new token's k/v go to slot
    M + (pos - M) mod W (slot pos while pos < M). A row with pos < 0 is left alone."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    symbol = (f"kv_cache_write_sw{window}_m{num_meta}_b{batch}_kv{num_kv_heads}_d{qk_dim}x{v_dim}"
              f"_{dtype}_{cache_dtype}")
    return _cache_write(batch, num_kv_heads, qk_dim, v_dim, num_meta + window, num_meta, window,
                        dtype, cache_dtype, symbol)


def kv_cache_write_global(batch: int, num_kv_heads: int, qk_dim: int, v_dim: int,
                          capacity: int | None,
                          dtype: str = "float32", cache_dtype: str | None = None) -> tirx.PrimFunc:
    """In place: (k_new, v_new, pos, k_cache [B, KV, CAP, DQ], v_cache [B, KV, CAP, DV]); the new
    token's k/v go to slot pos. A row with pos outside [0, CAP) is left alone."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    symbol = (f"kv_cache_write_global_{_cap_tag(capacity)}_b{batch}_kv{num_kv_heads}_d{qk_dim}x{v_dim}"
              f"_{dtype}_{cache_dtype}")
    return _cache_write(batch, num_kv_heads, qk_dim, v_dim, capacity, 0, None, dtype, cache_dtype,
                        symbol)


def rope_cache_write(batch: int, num_heads: int, num_kv_heads: int, qk_dim: int, v_dim: int,
                     rows: int, base: float, window: int | None, num_meta: int,
                     capacity: int | None = None, dtype: str = "float32",
                     cache_dtype: str | None = None) -> tirx.PrimFunc:
    """Decode of an owner layer, RoPE fused with the cache write (fusion `rope_cache=fused`):
    (proj [B, 1, rows], pos [B, 1] int32, k_cache, v_cache) -> q [B, H, 1, DQ] (the last
    parameter, as `call_tir_inplace` appends fresh outputs), and in place the
    rotated k and the v of each row written straight into the cache slot of its position (the
    `kv_cache_write_*` slot rule: ring M + W for a window, else capacity CAP, symbolic when
    None). The same arithmetic as `rope_qkv` then `kv_cache_write_*` (k rotated in `dtype`, then
    cast to `cache_dtype`); a row with pos < 0 or a slot outside the cache writes no k/v."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    B, H, KV, DQ, DV, M = batch, num_heads, num_kv_heads, qk_dim, v_dim, num_meta
    half, rot, cos_sin_and_q = _rope_parts(H, DQ, base, dtype)
    if rows < H * DQ + KV * (DQ + DV):
        raise ValueError(f"rows={rows} is smaller than the q/k/v slices ({H * DQ + KV * (DQ + DV)})")
    K0, K1, V0 = H * DQ, H * DQ + half, H * DQ + KV * DQ
    CAP = M + window if window is not None else _cap(capacity)

    def slot(pos, vb):
        return _slot(T.Cast("int64", pos[vb, 0]), M, window)

    @T.prim_func(s_tir=True)
    def fused(proj_h: T.handle, pos_h: T.handle, kc_h: T.handle, vc_h: T.handle, q_h: T.handle):
        proj = T.match_buffer(proj_h, (B, 1, rows), dtype)
        pos = T.match_buffer(pos_h, (B, 1), "int32")
        q = T.match_buffer(q_h, (B, H, 1, DQ), dtype)
        kc = T.match_buffer(kc_h, (B, KV, CAP, DQ), cache_dtype)
        vc = T.match_buffer(vc_h, (B, KV, CAP, DV), cache_dtype)
        for b in range(T.int64(B)):
            with T.sblock("token"):
                vb = T.axis.spatial(B, b)
                cs = T.sblock_alloc_buffer((half,), "float32", scope="local")
                sn = T.sblock_alloc_buffer((half,), "float32", scope="local")
                cos_sin_and_q(proj, pos, q, cs, sn, vb, T.int64(0))
                if pos[vb, 0] >= 0 and slot(pos, vb) < CAP:
                    for h, i in T.grid(KV, half):
                        with T.sblock("k_rope"):
                            kc[vb, h, slot(pos, vb), i] = T.Cast(cache_dtype, rot(
                                T.Cast("float32", proj[vb, 0, K0 + h * DQ + i]),
                                T.Cast("float32", proj[vb, 0, K1 + h * DQ + i]),
                                cs[i], sn[i], T.float32(-1)))
                            kc[vb, h, slot(pos, vb), half + i] = T.Cast(cache_dtype, rot(
                                T.Cast("float32", proj[vb, 0, K1 + h * DQ + i]),
                                T.Cast("float32", proj[vb, 0, K0 + h * DQ + i]),
                                cs[i], sn[i], T.float32(1)))
                    for h, e in T.grid(KV, DV):
                        with T.sblock("v_copy"):
                            vc[vb, h, slot(pos, vb), e] = T.Cast(cache_dtype,
                                                                 proj[vb, 0, V0 + h * DV + e])

    kind = f"sw{window}_m{M}" if window is not None else f"global_{_cap_tag(capacity)}"
    return finish(fused, "rope_cache_write",
                  f"rope_cache_{kind}_b{B}_h{H}x{KV}_d{DQ}x{DV}_r{rows}_base{base:g}_{dtype}"
                  f"_{cache_dtype}")


def _cache_fill(batch: int, num_kv_heads: int, qk_dim: int, v_dim: int, capacity: int | None,
                num_meta: int, window: int | None, dtype: str, cache_dtype: str,
                symbol: str) -> tirx.PrimFunc:
    B, KV, DQ, DV, CAP, M = batch, num_kv_heads, qk_dim, v_dim, _cap(capacity), num_meta

    def position(pads, vb, vi):  # packed index vi of row vb holds this position
        return vi - T.Cast("int64", pads[vb])

    def kept(pads, vb, vi, S):  # a real token whose k/v the cache keeps
        p = position(pads, vb, vi)
        if window is None:
            return tirx.all(p >= 0, p < CAP)
        # meta tokens and the last W tokens of the row: distinct slots
        return tirx.all(p >= 0, tirx.any(p < M, vi + window >= S))

    @T.prim_func(s_tir=True)
    def fill(k_h: T.handle, v_h: T.handle, pads_h: T.handle, kc_h: T.handle, vc_h: T.handle):
        S = T.int64()
        k = T.match_buffer(k_h, (B, KV, S, DQ), dtype)
        v = T.match_buffer(v_h, (B, KV, S, DV), dtype)
        pads = T.match_buffer(pads_h, (B,), "int32")
        kc = T.match_buffer(kc_h, (B, KV, CAP, DQ), cache_dtype)
        vc = T.match_buffer(vc_h, (B, KV, CAP, DV), cache_dtype)
        for b, h, i in T.grid(T.int64(B), T.int64(KV), S):
            with T.sblock("fill"):
                vb, vh, vi = T.axis.remap("SSS", [b, h, i])
                if kept(pads, vb, vi, S):
                    for d in range(DQ):
                        with T.sblock("fill_k"):
                            kc[vb, vh, _slot(position(pads, vb, vi), M, window), d] = T.Cast(
                                cache_dtype, k[vb, vh, vi, d])
                    for e in range(DV):
                        with T.sblock("fill_v"):
                            vc[vb, vh, _slot(position(pads, vb, vi), M, window), e] = T.Cast(
                                cache_dtype, v[vb, vh, vi, e])

    return finish(fill, "kv_cache_fill", symbol)


def kv_cache_fill_sliding(batch: int, num_kv_heads: int, qk_dim: int, v_dim: int, window: int,
                          num_meta: int, dtype: str = "float32",
                          cache_dtype: str | None = None) -> tirx.PrimFunc:
    """In place, after prefill: (k [B, KV, S, DQ], v [B, KV, S, DV], pads [B] int32,
    k_cache [B, KV, M + W, DQ], v_cache [B, KV, M + W, DV]). Writes the meta tokens and the last
    W tokens of each row to their ring slots; the row's count is then min(S - pads - M, W)."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    symbol = (f"kv_cache_fill_sw{window}_m{num_meta}_b{batch}_kv{num_kv_heads}_d{qk_dim}x{v_dim}"
              f"_{dtype}_{cache_dtype}")
    return _cache_fill(batch, num_kv_heads, qk_dim, v_dim, num_meta + window, num_meta, window,
                       dtype, cache_dtype, symbol)


def kv_cache_fill_global(batch: int, num_kv_heads: int, qk_dim: int, v_dim: int,
                         capacity: int | None,
                         dtype: str = "float32", cache_dtype: str | None = None) -> tirx.PrimFunc:
    """In place, after prefill: (k, v, pads, k_cache [B, KV, CAP, DQ], v_cache [B, KV, CAP, DV]).
    Writes every token of each row at slot = position (positions >= CAP are dropped); the row's
    length is then S - pads."""
    check_dtype(dtype)
    cache_dtype = check_dtype(cache_dtype or dtype)
    symbol = (f"kv_cache_fill_global_{_cap_tag(capacity)}_b{batch}_kv{num_kv_heads}_d{qk_dim}x{v_dim}"
              f"_{dtype}_{cache_dtype}")
    return _cache_fill(batch, num_kv_heads, qk_dim, v_dim, capacity, 0, None, dtype, cache_dtype,
                       symbol)


# Hymba-1.5B sizes (spec §1): 25 q heads, 5 kv heads, q/k dim 64, v dim 128, 128 meta tokens,
# window 1024, NTK base 10000 * 7^(32/31); in_proj 8960 rows (owners) / 8000 (consumers).
HYMBA_BASE = 10000.0 * 7.0 ** (32.0 / 31.0)
EXAMPLES = [
    (rope_qkv, (1, 25, 5, 64, 128, 8960, HYMBA_BASE, True, "bfloat16")),
    (rope_qkv, (1, 25, 5, 64, 128, 8000, HYMBA_BASE, False, "bfloat16")),
    (attention_prefill, (1, 25, 5, 64, 128, 1024, 128, "bfloat16")),
    (attention_prefill, (1, 25, 5, 64, 128, None, 128, "bfloat16")),
    (attention_decode_sliding, (1, 25, 5, 64, 128, 1024, 128, "bfloat16")),
    (attention_decode_global, (1, 25, 5, 64, 128, 8192 + 128, "bfloat16")),
    (kv_cache_write_sliding, (1, 5, 64, 128, 1024, 128, "bfloat16")),
    (kv_cache_write_global, (1, 5, 64, 128, 8192 + 128, "bfloat16")),
    (kv_cache_fill_sliding, (1, 5, 64, 128, 1024, 128, "bfloat16")),
    (kv_cache_fill_global, (1, 5, 64, 128, 8192 + 128, "bfloat16")),
    # as the compiled program calls them: float32 activations, bf16 caches, batch buckets,
    # symbolic (growing) global capacity
    (rope_qkv, (4, 25, 5, 64, 128, 8960, HYMBA_BASE, True, "float32")),
    (attention_prefill, (1, 25, 5, 64, 128, 1024, 128, "float32")),
    (attention_decode_sliding, (4, 25, 5, 64, 128, 1024, 128, "float32", "bfloat16")),
    (attention_decode_global, (4, 25, 5, 64, 128, None, "float32", "bfloat16")),
    (kv_cache_write_sliding, (4, 5, 64, 128, 1024, 128, "float32", "bfloat16")),
    (kv_cache_write_global, (4, 5, 64, 128, None, "float32", "bfloat16")),
    (kv_cache_fill_sliding, (1, 5, 64, 128, 1024, 128, "float32", "bfloat16")),
    (kv_cache_fill_global, (1, 5, 64, 128, None, "float32", "bfloat16")),
    (rope_cache_write, (4, 25, 5, 64, 128, 8960, HYMBA_BASE, 1024, 128, None, "float32",
                        "bfloat16")),
    (rope_cache_write, (4, 25, 5, 64, 128, 8960, HYMBA_BASE, None, 128, None, "float32",
                        "bfloat16")),
]
