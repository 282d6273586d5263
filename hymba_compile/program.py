"""The whole model as one Relax IRModule: every layer calls our scheduled `ir/` kernels with
`call_tir` (in-place ones with `call_tir_inplace`), so a step is one VM call with no Python per
kernel. Mirrors `reference.HymbaReference` (prefill from the meta-token state, cached decode).

Functions (weights = one tuple argument in `program_weights.weight_specs` order, bound once):

  prefix(weights)
      the M meta tokens alone, from zero state -> (meta_k, meta_v per owner layer
      [1, KV, M, d], conv state [1, K, C] and SSM state [1, N, C] per layer). Prompt-independent:
      the runtime runs it once per loaded model.
  prefill(ids [n] i32, positions [1, n] i32, prefix state..., ring / global row caches...,
          weights)
      the prompt of one row after the meta tokens -> (normed hidden [n, H], the caches filled in
      place, conv and SSM state after the prompt). Attention keys are [meta; prompt].
  logits_last(hidden [n, H], weights) -> [1, V];  logits_all(hidden, weights) -> [n, V]
  decode_b{B}(ids [B] i32, pos [B] i32, caches..., conv [B, K, C], ssm [B, N, C], weights)
      one token per row at per-row positions -> (logits [B, V], the state, updated in place).

Activations are float32 everywhere; weights float32 or bfloat16; caches in the weight dtype
(bf16: the spec's 1,920 bytes per owner layer and token). Global caches have a symbolic
capacity `cap` so the runtime can grow them without recompiling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, tirx

from ir import attention as A
from ir import combine, conv, embed, linear, norm, scan
from ir.common import KERNEL_ATTR
from schedules import apply_schedule

from .config import GLOBAL, HymbaConfig
from .program_weights import weight_specs

F32, I32 = "float32", "int32"


def _tensor(shape, dtype=F32) -> relax.TensorType:
    return relax.TensorType(list(shape), dtype)


@dataclass(frozen=True)
class ProgramSpec:
    """What one compiled program is specialised to."""

    config: HymbaConfig
    weight_dtype: str  # "float32" | "bfloat16"
    decode_batches: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self) -> None:
        c = self.config
        if c.num_memory_tokens < 1:
            raise ValueError("the compiled backend needs at least one meta token "
                             "(num_memory_tokens >= 1), as every Hymba checkpoint has")
        if not c.rope:
            raise ValueError("the compiled backend implements rope=true only (official Hymba)")
        if self.weight_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"weight dtype {self.weight_dtype!r}: use float32 or bfloat16")

    @property
    def cache_dtype(self) -> str:
        return self.weight_dtype


class _Kernels:
    """Scheduled PrimFuncs added to the module once each, by global symbol."""

    def __init__(self, bb: relax.BlockBuilder, target: tvm.target.Target, variants: dict[str, str],
                 on_kernel=None):
        self.bb, self.target, self.variants = bb, target, variants
        self.gvars: dict[str, relax.GlobalVar] = {}
        self.chosen: dict[str, str] = {}
        self.on_kernel = on_kernel

    def __call__(self, func: tirx.PrimFunc) -> relax.GlobalVar:
        symbol = str(func.attrs["global_symbol"])
        if symbol not in self.gvars:
            family = str(func.attrs[KERNEL_ATTR])
            variant = self.variants.get(family)
            scheduled = apply_schedule(func, self.target, variant)["main"]
            scheduled = scheduled.with_attr({"tirx.is_scheduled": True, "global_symbol": symbol})
            self.gvars[symbol] = self.bb.add_func(scheduled, symbol)
            self.chosen[symbol] = variant or "default"
            if self.on_kernel is not None:
                self.on_kernel(symbol)
        return self.gvars[symbol]


class _Builder:
    """Emits the calls of one Relax function; `w(name)` reads a weight from the tuple."""

    def __init__(self, spec: ProgramSpec, kernels: _Kernels, weights: relax.Var):
        self.spec, self.c, self.k, self.bb = spec, spec.config, kernels, kernels.bb
        self.weights = weights
        self.index = {s.name: i for i, s in enumerate(weight_specs(spec.config, spec.weight_dtype))}
        self._loaded: dict[str, relax.Expr] = {}

    def w(self, name: str) -> relax.Expr:
        if name not in self._loaded:
            self._loaded[name] = self.bb.emit(relax.TupleGetItem(self.weights, self.index[name]))
        return self._loaded[name]

    def call(self, func, args, *outs):
        """call_tir of a kernel with fresh outputs given as (shape, dtype) pairs."""
        types = [_tensor(s, d) for s, d in outs]
        result = self.bb.emit(relax.call_tir(self.k(func), list(args),
                                             types[0] if len(types) == 1 else types))
        if len(types) == 1:
            return result
        return [self.bb.emit(relax.TupleGetItem(result, i)) for i in range(len(types))]

    def inplace(self, func, args, indices, *outs):
        """call_tir_inplace: outs[i] aliases args[indices[i]] (or is fresh where -1)."""
        types = [_tensor(s, d) for s, d in outs]
        result = self.bb.emit(relax.call_tir_inplace(self.k(func), list(args), list(indices),
                                                     types[0] if len(types) == 1 else types))
        if len(types) == 1:
            return [result]
        return [self.bb.emit(relax.TupleGetItem(result, i)) for i in range(len(types))]

    def columns(self, x, start: int, width: int):
        """x[:, start:start + width] as its own contiguous tensor."""
        return self.bb.emit(relax.op.strided_slice(x, axes=[1], begin=[start], end=[start + width]))

    def reshape(self, x, shape):
        return self.bb.emit(relax.op.reshape(x, list(shape)))

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def sizes(self):
        c = self.c
        return (c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_dt_rank, c.mamba_d_conv,
                c.num_attention_heads, c.num_key_value_heads, c.qk_head_dim, c.v_dim)

    def rows(self, plan) -> int:
        return self.c.in_proj_rows_owner if plan.owns_kv else self.c.in_proj_rows_consumer

    def x_offset(self, plan) -> int:
        """Column of the SSM input x in the in_proj output (z follows it)."""
        c = self.c
        q = c.num_attention_heads * c.qk_head_dim
        kv = c.num_key_value_heads * (c.qk_head_dim + c.v_dim)
        return q + (kv if plan.owns_kv else 0)


def owner_layers(c: HymbaConfig) -> list:
    """The layers that own K/V (consumers read their producer's), in order."""
    return [p for p in c.layer_plan() if p.owns_kv]


def cache_shapes(c: HymbaConfig, batch, cap) -> list[tuple]:
    """Shapes of the k and v caches of every owner layer, in owner order: the ring
    [batch, KV, M + W, d] for sliding-window layers, [batch, KV, cap, d] for global ones.
    The program's cache arguments and the runtime's allocations both come from here."""
    shapes = []
    for p in owner_layers(c):
        slots = cap if p.attention == GLOBAL else c.num_memory_tokens + c.sliding_window
        shapes += [(batch, c.num_key_value_heads, slots, c.qk_head_dim),
                   (batch, c.num_key_value_heads, slots, c.v_dim)]
    return shapes


# ---------------------------------------------------------------------------------------------
# Sequence functions (prefix and prefill): n tokens of one row
# ---------------------------------------------------------------------------------------------

def _sequence(g: _Builder, h, positions, n, prefix, caches):
    """The layers over n tokens of one row (hidden h [n, H]).

    prefix None: the meta tokens from zero state; else (meta_k, meta_v, conv_in, ssm_in) lists and
    the row caches to fill. Returns (normed final hidden [n, H], per-owner (k, v) of this call,
    conv states, ssm states, caches after filling)."""
    c, spec = g.c, g.spec
    H, C, N, r, K, nh, kvh, dq, dv = g.sizes
    wd, eps = spec.weight_dtype, c.rms_norm_eps
    owners = {p.index: j for j, p in enumerate(owner_layers(c))}
    zero_pads = g.bb.emit(relax.const(np.zeros((1,), dtype=np.int32)))
    kv: dict[int, tuple] = {}
    convs, ssms, new_caches = [], [], list(caches) if caches is not None else None
    hn = g.call(norm.rmsnorm(H, F32, eps), [h, g.w("l0.input_norm")], ((n, H), F32))
    for plan in c.layer_plan():
        i, rows = plan.index, g.rows(plan)
        L = lambda name: g.w(f"l{i}.{name}")  # noqa: E731
        proj = g.call(linear.matmul(rows, H, wd), [hn, L("in_proj")], ((n, rows), F32))
        proj3 = g.reshape(proj, (1, n, rows))
        rope = A.rope_qkv(1, nh, kvh, dq, dv, rows, c.rope_base, plan.owns_kv, F32)
        if plan.owns_kv:
            q, k, v = g.call(rope, [proj3, positions], ((1, nh, n, dq), F32),
                             ((1, kvh, n, dq), F32), ((1, kvh, n, dv), F32))
            if prefix is None:
                keys = (k, v)
            else:  # keys = [meta; prompt]
                j = owners[i]
                keys = (g.bb.emit(relax.op.concat([prefix[0][j], k], axis=2)),
                        g.bb.emit(relax.op.concat([prefix[1][j], v], axis=2)))
            kv[i] = keys
        else:
            q = g.call(rope, [proj3, positions], ((1, nh, n, dq), F32))
        k_all, v_all = kv[plan.kv_source]
        window = None if plan.attention == GLOBAL else c.sliding_window
        attn = g.call(A.attention_prefill(1, nh, kvh, dq, dv, window, c.num_memory_tokens, F32),
                      [q, k_all, v_all, zero_pads], ((1, n, nh * dv), F32))
        attn = g.reshape(attn, (n, C))
        # SSM branch
        off = g.x_offset(plan)
        x3 = g.reshape(g.columns(proj, off, C), (1, n, C))
        z3 = g.reshape(g.columns(proj, off + C, C), (1, n, C))
        if prefix is None:
            xc, conv_state = g.call(conv.causal_conv1d(C, K, F32), [x3, L("conv_w"), L("conv_b")],
                                    ((1, n, C), F32), ((1, K, C), F32))
        else:
            xc, conv_state = g.call(conv.causal_conv1d(C, K, F32, with_state=True),
                                    [x3, L("conv_w"), L("conv_b"), prefix[2][i]],
                                    ((1, n, C), F32), ((1, K, C), F32))
        xp = g.call(linear.matmul(r + 2 * N, C, wd), [g.reshape(xc, (n, C)), L("x_proj")],
                    ((n, r + 2 * N), F32))
        dt_raw, Bm, Cm = _ssm_split(g, i, xp, n)
        dt = g.call(linear.matmul(C, r, wd), [dt_raw, L("dt_proj")], ((n, C), F32))
        h0 = (g.bb.emit(relax.op.zeros(relax.ShapeExpr([1, N, C]), F32)) if prefix is None
              else prefix[3][i])
        y, ssm_state = g.call(scan.selective_scan(C, N, F32), [
            xc, g.reshape(dt, (1, n, C)), L("A"), g.reshape(Bm, (1, n, N)), g.reshape(Cm, (1, n, N)),
            L("D"), z3, L("dt_bias"), h0], ((1, n, C), F32), ((1, N, C), F32))
        convs.append(conv_state)
        ssms.append(ssm_state)
        # combine, residual, FFN
        fused = g.call(combine.norm_average(C, wd, eps), [attn, g.reshape(y, (n, C)),
                                                         L("avg_norm1"), L("avg_norm2")],
                       ((n, C), F32))
        mixed = g.call(linear.matmul(H, C, wd), [fused, L("out_proj")], ((n, H), F32))
        h, v_in = g.call(norm.add_rmsnorm(H, F32, eps), [mixed, h, L("pre_moe_norm")],
                         ((n, H), F32), ((n, H), F32))
        act = g.call(combine.gate_up_prefill(H, c.intermediate_size, wd),
                     [v_in, L("gate"), L("up")], ((n, c.intermediate_size), F32))
        ffn = g.call(linear.matmul(H, c.intermediate_size, wd), [act, L("down")], ((n, H), F32))
        next_norm = g.w(f"l{i + 1}.input_norm") if i + 1 < c.num_hidden_layers else g.w("final_norm")
        h, hn = g.call(norm.add_rmsnorm(H, F32, eps), [ffn, h, next_norm],
                       ((n, H), F32), ((n, H), F32))
        if new_caches is not None and plan.owns_kv:
            j = owners[i]
            kc, vc = new_caches[2 * j], new_caches[2 * j + 1]
            cd = spec.cache_dtype
            if plan.attention == GLOBAL:
                fill = A.kv_cache_fill_global(1, kvh, dq, dv, None, F32, cd)
            else:
                fill = A.kv_cache_fill_sliding(1, kvh, dq, dv, c.sliding_window,
                                               c.num_memory_tokens, F32, cd)
            kc_shape, vc_shape = tuple(kc.ty.shape), tuple(vc.ty.shape)
            kc, vc = g.inplace(fill, [kv[i][0], kv[i][1], zero_pads, kc, vc], [3, 4],
                               (kc_shape, cd), (vc_shape, cd))
            new_caches[2 * j], new_caches[2 * j + 1] = kc, vc
    return hn, kv, convs, ssms, new_caches


def _ssm_split(g: _Builder, i: int, xp, n):
    """x_proj output -> dt_raw [n, r], B, C [n, N] (inner RMSNorms when the config has them)."""
    c = g.c
    N, r = c.mamba_d_state, c.mamba_dt_rank
    outs = (((n, r), F32), ((n, N), F32), ((n, N), F32))
    if c.mamba_inner_layernorms:
        return g.call(scan.ssm_input_split(r, N, F32, c.rms_norm_eps, True),
                      [xp, g.w(f"l{i}.dt_norm"), g.w(f"l{i}.B_norm"), g.w(f"l{i}.C_norm")], *outs)
    return g.call(scan.ssm_input_split(r, N, F32, c.rms_norm_eps, False), [xp], *outs)


def _weights_var(spec: ProgramSpec) -> relax.Var:
    types = [_tensor(s.shape, s.dtype) for s in weight_specs(spec.config, spec.weight_dtype)]
    return relax.Var("weights", relax.TupleType(types))


def _add_prefix(kernels: _Kernels, spec: ProgramSpec) -> None:
    c = spec.config
    weights = _weights_var(spec)
    M = c.num_memory_tokens
    with kernels.bb.function("prefix", [weights]):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            positions = g.bb.emit(relax.const(np.arange(M, dtype=np.int32)[None]))
            _, kv, convs, ssms, _ = _sequence(g, g.w("meta"), positions, M, None, None)
            owners = owner_layers(c)
            out = g.bb.emit_output(relax.Tuple([
                relax.Tuple([kv[p.index][0] for p in owners]),
                relax.Tuple([kv[p.index][1] for p in owners]),
                relax.Tuple(convs), relax.Tuple(ssms)]))
        kernels.bb.emit_func_output(out)


def _cache_vars(c: HymbaConfig, spec: ProgramSpec, batch, cap) -> list[relax.Var]:
    """k and v cache variables for every owner layer, in owner order (`cache_shapes`)."""
    names = [f"{kv}_cache_{p.index}" for p in owner_layers(c) for kv in ("k", "v")]
    return [relax.Var(name, _tensor(shape, spec.cache_dtype))
            for name, shape in zip(names, cache_shapes(c, batch, cap))]


def _add_prefill(kernels: _Kernels, spec: ProgramSpec) -> None:
    c = spec.config
    H, C, N, K = c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_d_conv
    M, kvh, dq, dv = c.num_memory_tokens, c.num_key_value_heads, c.qk_head_dim, c.v_dim
    n, cap = tirx.Var("n", "int64"), tirx.Var("cap", "int64")
    owners = owner_layers(c)
    ids = relax.Var("ids", _tensor((n,), I32))
    positions = relax.Var("positions", _tensor((1, n), I32))
    meta_k = relax.Var("meta_k", relax.TupleType([_tensor((1, kvh, M, dq)) for _ in owners]))
    meta_v = relax.Var("meta_v", relax.TupleType([_tensor((1, kvh, M, dv)) for _ in owners]))
    conv_in = relax.Var("conv_in", relax.TupleType([_tensor((1, K, C))] * c.num_hidden_layers))
    ssm_in = relax.Var("ssm_in", relax.TupleType([_tensor((1, N, C))] * c.num_hidden_layers))
    caches = _cache_vars(c, spec, 1, cap)
    caches_t = relax.Var("caches", relax.TupleType([v.ty for v in caches]))
    weights = _weights_var(spec)
    with kernels.bb.function("prefill", [ids, positions, meta_k, meta_v, conv_in, ssm_in, caches_t,
                                         weights]):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            item = lambda t, j: g.bb.emit(relax.TupleGetItem(t, j))  # noqa: E731
            prefix = ([item(meta_k, j) for j in range(len(owners))],
                      [item(meta_v, j) for j in range(len(owners))],
                      [item(conv_in, i) for i in range(c.num_hidden_layers)],
                      [item(ssm_in, i) for i in range(c.num_hidden_layers)])
            row_caches = [item(caches_t, j) for j in range(len(caches))]
            h = g.call(embed.embedding(c.vocab_size, H, spec.weight_dtype, I32, F32),
                       [ids, g.w("embed")], ((n, H), F32))
            hn, _, convs, ssms, filled = _sequence(g, h, positions, n, prefix, row_caches)
            out = g.bb.emit_output(relax.Tuple([hn, relax.Tuple(filled), relax.Tuple(convs),
                                                relax.Tuple(ssms)]))
        kernels.bb.emit_func_output(out)


def _add_logits(kernels: _Kernels, spec: ProgramSpec) -> None:
    c = spec.config
    H, V, wd = c.hidden_size, c.vocab_size, spec.weight_dtype
    for name in ("logits_last", "logits_all"):
        n = tirx.Var("n", "int64")
        hidden = relax.Var("hidden", _tensor((n, H)))
        weights = _weights_var(spec)
        with kernels.bb.function(name, [hidden, weights]):
            with kernels.bb.dataflow():
                g = _Builder(spec, kernels, weights)
                if name == "logits_last":
                    last = g.bb.emit(relax.op.strided_slice(hidden, axes=[0], begin=[n - 1], end=[n]))
                    logits = g.call(linear.gemv(1, V, H, wd), [last, g.w("embed")], ((1, V), F32))
                else:
                    logits = g.call(linear.matmul(V, H, wd), [hidden, g.w("embed")], ((n, V), F32))
                out = g.bb.emit_output(logits)
            kernels.bb.emit_func_output(out)


def _add_decode(kernels: _Kernels, spec: ProgramSpec, B: int) -> None:
    c = spec.config
    H, C, N, K = c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_d_conv
    M, W, nh, kvh, dq, dv = (c.num_memory_tokens, c.sliding_window, c.num_attention_heads,
                             c.num_key_value_heads, c.qk_head_dim, c.v_dim)
    r, FF, wd, cd, eps = c.mamba_dt_rank, c.intermediate_size, spec.weight_dtype, spec.cache_dtype, c.rms_norm_eps
    cap = tirx.Var("cap", "int64")
    owners = {p.index: j for j, p in enumerate(owner_layers(c))}
    cache_vars = _cache_vars(c, spec, B, cap)
    ids = relax.Var("ids", _tensor((B,), I32))
    pos = relax.Var("pos", _tensor((B,), I32))
    caches_t = relax.Var("caches", relax.TupleType([v.ty for v in cache_vars]))
    conv_t = relax.Var("conv", relax.TupleType([_tensor((B, K, C))] * c.num_hidden_layers))
    ssm_t = relax.Var("ssm", relax.TupleType([_tensor((B, N, C))] * c.num_hidden_layers))
    weights = _weights_var(spec)
    with kernels.bb.function(f"decode_b{B}", [ids, pos, caches_t, conv_t, ssm_t, weights]):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            bb = g.bb
            item = lambda t, j: bb.emit(relax.TupleGetItem(t, j))  # noqa: E731
            caches = [item(caches_t, j) for j in range(len(cache_vars))]
            convs = [item(conv_t, i) for i in range(c.num_hidden_layers)]
            ssms = [item(ssm_t, i) for i in range(c.num_hidden_layers)]
            pos2 = g.reshape(pos, (B, 1))
            count = bb.emit(relax.op.minimum(relax.op.add(pos, relax.const(1 - M, I32)),
                                             relax.const(W, I32)))
            length = bb.emit(relax.op.add(pos, relax.const(1, I32)))
            h = g.call(embed.embedding(c.vocab_size, H, wd, I32, F32), [ids, g.w("embed")],
                       ((B, H), F32))
            hn = g.call(norm.rmsnorm(H, F32, eps), [h, g.w("l0.input_norm")], ((B, H), F32))
            for plan in c.layer_plan():
                i, rows = plan.index, g.rows(plan)
                L = lambda name: g.w(f"l{i}.{name}")  # noqa: E731
                proj = g.call(linear.gemv(B, rows, H, wd), [hn, L("in_proj")], ((B, rows), F32))
                rope = A.rope_qkv(B, nh, kvh, dq, dv, rows, c.rope_base, plan.owns_kv, F32)
                proj3 = g.reshape(proj, (B, 1, rows))
                glob = plan.attention == GLOBAL
                if plan.owns_kv:
                    q, k, v = g.call(rope, [proj3, pos2], ((B, nh, 1, dq), F32),
                                     ((B, kvh, 1, dq), F32), ((B, kvh, 1, dv), F32))
                    j = owners[i]
                    kc, vc = caches[2 * j], caches[2 * j + 1]
                    write = (A.kv_cache_write_global(B, kvh, dq, dv, None, F32, cd) if glob else
                             A.kv_cache_write_sliding(B, kvh, dq, dv, W, M, F32, cd))
                    kc, vc = g.inplace(write, [k, v, pos, kc, vc], [3, 4],
                                       (tuple(kc.ty.shape), cd),
                                       (tuple(vc.ty.shape), cd))
                    caches[2 * j], caches[2 * j + 1] = kc, vc
                else:
                    q = g.call(rope, [proj3, pos2], ((B, nh, 1, dq), F32))
                j = owners[plan.kv_source]
                kc, vc = caches[2 * j], caches[2 * j + 1]
                if glob:
                    att = g.call(A.attention_decode_global(B, nh, kvh, dq, dv, None, F32, cd),
                                 [q, kc, vc, length], ((B, 1, nh * dv), F32))
                else:
                    att = g.call(A.attention_decode_sliding(B, nh, kvh, dq, dv, W, M, F32, cd),
                                 [q, kc, vc, count], ((B, 1, nh * dv), F32))
                off = g.x_offset(plan)
                x, z = g.columns(proj, off, C), g.columns(proj, off + C, C)
                (convs[i], xc) = g.inplace(conv.causal_conv1d_step(C, K, F32),
                                           [convs[i], x, L("conv_w"), L("conv_b")], [0, -1],
                                           ((B, K, C), F32), ((B, C), F32))
                xp = g.call(linear.gemv(B, r + 2 * N, C, wd), [xc, L("x_proj")],
                            ((B, r + 2 * N), F32))
                dt_raw, Bm, Cm = _ssm_split(g, i, xp, B)
                dt = g.call(linear.gemv(B, C, r, wd), [dt_raw, L("dt_proj")], ((B, C), F32))
                (ssms[i], y) = g.inplace(scan.selective_state_update(C, N, F32),
                                         [ssms[i], xc, dt, L("A"), Bm, Cm, L("D"), z, L("dt_bias")],
                                         [0, -1], ((B, N, C), F32), ((B, C), F32))
                mixed = g.call(combine.hybrid_combine_decode(B, C, H, wd, eps),
                               [g.reshape(att, (B, C)), y, L("avg_norm1"), L("avg_norm2"),
                                L("out_proj")], ((B, H), F32))
                h, v_in = g.call(norm.add_rmsnorm(H, F32, eps), [mixed, h, L("pre_moe_norm")],
                                 ((B, H), F32), ((B, H), F32))
                act = g.call(combine.gate_up_decode(B, H, FF, wd), [v_in, L("gate"), L("up")],
                             ((B, FF), F32))
                ffn = g.call(linear.gemv(B, H, FF, wd), [act, L("down")], ((B, H), F32))
                nxt = g.w(f"l{i + 1}.input_norm") if i + 1 < c.num_hidden_layers else g.w("final_norm")
                h, hn = g.call(norm.add_rmsnorm(H, F32, eps), [ffn, h, nxt],
                               ((B, H), F32), ((B, H), F32))
            logits = g.call(linear.gemv(B, c.vocab_size, H, wd), [hn, g.w("embed")],
                            ((B, c.vocab_size), F32))
            out = bb.emit_output(relax.Tuple([logits, relax.Tuple(caches), relax.Tuple(convs),
                                              relax.Tuple(ssms)]))
        kernels.bb.emit_func_output(out)


def build_program(spec: ProgramSpec, target: tvm.target.Target,
                  variants: dict[str, str] | None = None, on_kernel=None):
    """The Relax IRModule of `spec` for `target` and the schedule variant chosen per kernel
    symbol. `variants` maps a kernel family to a named schedule variant (default: each
    family's default); `on_kernel(symbol)` is called as each kernel is scheduled."""
    bb = relax.BlockBuilder()
    kernels = _Kernels(bb, target, variants or {}, on_kernel)
    _add_prefix(kernels, spec)
    _add_prefill(kernels, spec)
    _add_logits(kernels, spec)
    for b in spec.decode_batches:
        _add_decode(kernels, spec, b)
    return bb.get(), dict(kernels.chosen)
