"""One Hymba layer as Relax calls, shared by prefill and decode: the chain of a layer is written
once (`layer`), and the kernels that differ between a sequence of tokens and one decode step sit
behind the same small interface (`SequenceSteps`, `DecodeSteps`). A fusion variant (a fused
combine, RoPE fused with the cache write, ...) is swapped in the steps, in one place.
Mirrors `reference.HymbaReference`'s layer [spec §3]: attention heads and SSM heads on the same
in_proj output, normalised and averaged, out_proj, residual, FFN, residual."""

from __future__ import annotations

import numpy as np
from tvm import relax

from hymba_compile.ir import attention as A
from hymba_compile.ir import combine, conv, linear, norm, scan
from hymba_compile.schedules.options import scan_algorithm

from .config import GLOBAL

F32, I32 = "float32", "int32"


def layer(g, steps, plan, h, hn):
    """The layer `plan` over T rows (T = n tokens of one row, or B decode rows): h [T, H] the
    residual stream, hn [T, H] its input norm. Returns (h, hn) for the next layer (hn normed with
    the next layer's input norm, or the final norm after the last layer)."""
    c = g.c
    H, C, N, r = c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_dt_rank
    i, eps, T = plan.index, c.rms_norm_eps, steps.rows
    L = lambda name: g.w(f"l{i}.{name}")  # noqa: E731
    proj = steps.linear(g.rows(plan), H, hn, L("in_proj"))
    attn = steps.attention(plan, proj)  # [T, C]: heads x v_dim = d_inner
    off = g.x_offset(plan)
    if steps.reads_columns:  # the kernels read x and z inside the in_proj output
        x, z = (proj, off), (proj, off + C)
    else:
        x, z = g.columns(proj, off, C), g.columns(proj, off + C, C)
    xc = steps.conv(plan, x)
    xp = steps.linear(r + 2 * N, C, xc, L("x_proj"))
    dt_raw, Bm, Cm = ssm_split(g, i, xp, T)
    dt = steps.linear(C, r, dt_raw, L("dt_proj"))
    y = steps.scan(plan, xc, dt, Bm, Cm, z)
    mixed = steps.combine(plan, attn, y)
    h, v_in = g.call(g.kernel(norm.add_rmsnorm, H, F32, eps), [mixed, h, L("pre_moe_norm")],
                     ((T, H), F32), ((T, H), F32))
    ffn = steps.ffn(plan, v_in)
    nxt = g.w(f"l{i + 1}.input_norm") if i + 1 < c.num_hidden_layers else g.w("final_norm")
    return g.call(g.kernel(norm.add_rmsnorm, H, F32, eps), [ffn, h, nxt],
                  ((T, H), F32), ((T, H), F32))


def ssm_split(g, i: int, xp, rows):
    """x_proj output -> dt_raw [rows, r], B, C [rows, N] (inner RMSNorms when the config has
    them)."""
    c = g.c
    N, r = c.mamba_d_state, c.mamba_dt_rank
    outs = (((rows, r), F32), ((rows, N), F32), ((rows, N), F32))
    if c.mamba_inner_layernorms:
        return g.call(g.kernel(scan.ssm_input_split, r, N, F32, c.rms_norm_eps, True),
                      [xp, g.w(f"l{i}.dt_norm"), g.w(f"l{i}.B_norm"), g.w(f"l{i}.C_norm")], *outs)
    return g.call(g.kernel(scan.ssm_input_split, r, N, F32, c.rms_norm_eps, False), [xp], *outs)


def unfused_gate_up(g, steps, rows, x, gate_w, up_w):
    """silu(x @ gate^T) * (x @ up^T) as two linears and an elementwise kernel (the fusion
    variant `gate_up=unfused`; the default is one fused kernel)."""
    H, FF = g.c.hidden_size, g.c.intermediate_size
    gate = steps.linear(FF, H, x, gate_w)
    up = steps.linear(FF, H, x, up_w)
    return g.call(g.kernel(combine.silu_mul, FF), [gate, up], ((rows, FF), F32))


class SequenceSteps:
    """The kernels of a layer over n tokens of one row (prefix and prefill): GEMMs, flash
    attention over [meta; prompt] keys, the conv and scan over the sequence.

    prefix None: the meta tokens from zero state (their k/v are kept in `kv` for the caller);
    else (meta_k, meta_v, conv_in, ssm_in) lists, and `caches` the row caches to fill."""

    reads_columns = False  # x and z arrive as their own tensors (sliced out of in_proj's output)

    def __init__(self, g, n, positions, prefix, caches):
        self.g, self.rows, self.positions, self.prefix = g, n, positions, prefix
        self.caches = list(caches) if caches is not None else None
        self.owners = {p.index: j for j, p in enumerate(g.owners)}
        self.zero_pads = g.bb.emit(relax.const(np.zeros((1,), dtype=np.int32)))
        self.kv: dict[int, tuple] = {}  # owner layer -> (k, v) [1, KV, keys, d] of this call
        self.convs, self.ssms = [], []

    def linear(self, out_features, in_features, x, w):
        g, n = self.g, self.rows
        return g.call(g.kernel(linear.matmul, out_features, in_features, g.spec.weight_dtype),
                      [x, w], ((n, out_features), F32))

    def attention(self, plan, proj):
        g, c, n = self.g, self.g.c, self.rows
        _, C, _, _, _, nh, kvh, dq, dv = g.sizes
        rows = g.rows(plan)
        proj3 = g.reshape(proj, (1, n, rows))
        rope = g.kernel(A.rope_qkv, 1, nh, kvh, dq, dv, rows, c.rope_base, plan.owns_kv, F32)
        if plan.owns_kv:
            q, k, v = g.call(rope, [proj3, self.positions], ((1, nh, n, dq), F32),
                             ((1, kvh, n, dq), F32), ((1, kvh, n, dv), F32))
            if self.prefix is not None:  # keys = [meta; prompt]
                j = self.owners[plan.index]
                k = g.bb.emit(relax.op.concat([self.prefix[0][j], k], axis=2))
                v = g.bb.emit(relax.op.concat([self.prefix[1][j], v], axis=2))
            self.kv[plan.index] = (k, v)
            self._fill(plan, k, v)
        else:
            q = g.call(rope, [proj3, self.positions], ((1, nh, n, dq), F32))
        k_all, v_all = self.kv[plan.kv_source]
        window = None if plan.attention == GLOBAL else c.sliding_window
        attn = g.call(g.kernel(A.attention_prefill, 1, nh, kvh, dq, dv, window,
                               c.num_memory_tokens, F32),
                      [q, k_all, v_all, self.zero_pads], ((1, n, nh * dv), F32))
        return g.reshape(attn, (n, C))

    def _fill(self, plan, k, v):
        """Copy the keys [1, KV, M + n, d] ([meta; prompt]) into the row's caches (prefill)."""
        if self.caches is None:
            return
        g, c, cd = self.g, self.g.c, self.g.spec.cache_dtype
        _, _, _, _, _, _, kvh, dq, dv = g.sizes
        j = self.owners[plan.index]
        kc, vc = self.caches[2 * j], self.caches[2 * j + 1]
        if plan.attention == GLOBAL:
            fill = g.kernel(A.kv_cache_fill_global, 1, kvh, dq, dv, None, F32, cd)
        else:
            fill = g.kernel(A.kv_cache_fill_sliding, 1, kvh, dq, dv, c.sliding_window,
                            c.num_memory_tokens, F32, cd)
        self.caches[2 * j], self.caches[2 * j + 1] = g.inplace(
            fill, [k, v, self.zero_pads, kc, vc], [3, 4],
            (tuple(kc.ty.shape), cd), (tuple(vc.ty.shape), cd))

    def conv(self, plan, x):
        g, n = self.g, self.rows
        C, K = g.c.d_inner, g.c.mamba_d_conv
        L = lambda name: g.w(f"l{plan.index}.{name}")  # noqa: E731
        x3 = g.reshape(x, (1, n, C))
        if self.prefix is None:
            xc, state = g.call(g.kernel(conv.causal_conv1d, C, K, F32),
                               [x3, L("conv_w"), L("conv_b")], ((1, n, C), F32), ((1, K, C), F32))
        else:
            xc, state = g.call(g.kernel(conv.causal_conv1d, C, K, F32, with_state=True),
                               [x3, L("conv_w"), L("conv_b"), self.prefix[2][plan.index]],
                               ((1, n, C), F32), ((1, K, C), F32))
        self.convs.append(state)
        return g.reshape(xc, (n, C))

    def scan(self, plan, xc, dt, Bm, Cm, z):
        g, n = self.g, self.rows
        C, N = g.c.d_inner, g.c.mamba_d_state
        L = lambda name: g.w(f"l{plan.index}.{name}")  # noqa: E731
        h0 = (g.bb.emit(relax.op.zeros(relax.ShapeExpr([1, N, C]), F32)) if self.prefix is None
              else self.prefix[3][plan.index])
        algorithm = g.spec.fusion("scan")
        if algorithm == "target":
            algorithm = scan_algorithm(g.k.target)
        builder = scan.selective_scan_chunked if algorithm == "chunked" else scan.selective_scan
        y, state = g.call(g.kernel(builder, C, N, F32), [
            g.reshape(xc, (1, n, C)), g.reshape(dt, (1, n, C)), L("A"), g.reshape(Bm, (1, n, N)),
            g.reshape(Cm, (1, n, N)), L("D"), g.reshape(z, (1, n, C)), L("dt_bias"), h0],
            ((1, n, C), F32), ((1, N, C), F32))
        self.ssms.append(state)
        return g.reshape(y, (n, C))

    def combine(self, plan, attn, y):
        """Norm-average of the two branches, then out_proj (two kernels at prefill)."""
        g, n = self.g, self.rows
        H, C, wd, eps = g.c.hidden_size, g.c.d_inner, g.spec.weight_dtype, g.c.rms_norm_eps
        L = lambda name: g.w(f"l{plan.index}.{name}")  # noqa: E731
        fused = g.call(g.kernel(combine.norm_average, C, wd, eps),
                       [attn, y, L("avg_norm1"), L("avg_norm2")], ((n, C), F32))
        return self.linear(H, C, fused, L("out_proj"))

    def ffn(self, plan, v_in):
        g, n = self.g, self.rows
        H, FF, wd = g.c.hidden_size, g.c.intermediate_size, g.spec.weight_dtype
        L = lambda name: g.w(f"l{plan.index}.{name}")  # noqa: E731
        if g.spec.fusion("gate_up") == "unfused":
            act = unfused_gate_up(g, self, n, v_in, L("gate"), L("up"))
        else:
            act = g.call(g.kernel(combine.gate_up_prefill, H, FF, wd), [v_in, L("gate"), L("up")],
                         ((n, FF), F32))
        return self.linear(H, FF, act, L("down"))


class DecodeSteps:
    """The kernels of a layer for one new token in each of B rows: GEMVs, the cache write and
    split-K decode attention, the conv step and the SSM state update (in place), and the fused
    norm-average + out_proj combine."""

    reads_columns = True  # x and z arrive as (in_proj output, column offset): no slice kernels

    def __init__(self, g, B, pos, caches, convs, ssms):
        c = g.c
        self.g, self.rows, self.pos = g, B, pos
        self.caches, self.convs, self.ssms = caches, convs, ssms
        self.owners = {p.index: j for j, p in enumerate(g.owners)}
        self.pos2 = g.reshape(pos, (B, 1))
        M, W = c.num_memory_tokens, c.sliding_window
        self.count = g.bb.emit(relax.op.minimum(relax.op.add(pos, relax.const(1 - M, I32)),
                                                relax.const(W, I32)))
        self.length = g.bb.emit(relax.op.add(pos, relax.const(1, I32)))

    def linear(self, out_features, in_features, x, w):
        g, B = self.g, self.rows
        return g.call(g.kernel(linear.gemv, B, out_features, in_features, g.spec.weight_dtype),
                      [x, w], ((B, out_features), F32))

    def attention(self, plan, proj):
        g, c, B, cd = self.g, self.g.c, self.rows, self.g.spec.cache_dtype
        _, C, _, _, _, nh, kvh, dq, dv = g.sizes
        M, W, rows = c.num_memory_tokens, c.sliding_window, g.rows(plan)
        glob = plan.attention == GLOBAL
        proj3 = g.reshape(proj, (B, 1, rows))
        fused_cache = plan.owns_kv and g.spec.fusion("rope_cache") == "fused"
        rope = None if fused_cache else g.kernel(A.rope_qkv, B, nh, kvh, dq, dv, rows,
                                                 c.rope_base, plan.owns_kv, F32)
        if fused_cache:
            j = self.owners[plan.index]
            kc, vc = self.caches[2 * j], self.caches[2 * j + 1]
            fused = g.kernel(A.rope_cache_write, B, nh, kvh, dq, dv, rows, c.rope_base,
                             None if glob else W, M, None, F32, cd)
            q, self.caches[2 * j], self.caches[2 * j + 1] = g.inplace(
                fused, [proj3, self.pos2, kc, vc], [-1, 2, 3], ((B, nh, 1, dq), F32),
                (tuple(kc.ty.shape), cd), (tuple(vc.ty.shape), cd))
        elif plan.owns_kv:
            q, k, v = g.call(rope, [proj3, self.pos2], ((B, nh, 1, dq), F32),
                             ((B, kvh, 1, dq), F32), ((B, kvh, 1, dv), F32))
            j = self.owners[plan.index]
            kc, vc = self.caches[2 * j], self.caches[2 * j + 1]
            write = (g.kernel(A.kv_cache_write_global, B, kvh, dq, dv, None, F32, cd) if glob else
                     g.kernel(A.kv_cache_write_sliding, B, kvh, dq, dv, W, M, F32, cd))
            self.caches[2 * j], self.caches[2 * j + 1] = g.inplace(
                write, [k, v, self.pos, kc, vc], [3, 4],
                (tuple(kc.ty.shape), cd), (tuple(vc.ty.shape), cd))
        else:
            q = g.call(rope, [proj3, self.pos2], ((B, nh, 1, dq), F32))
        j = self.owners[plan.kv_source]
        kc, vc = self.caches[2 * j], self.caches[2 * j + 1]
        if glob:
            att = g.call(g.kernel(A.attention_decode_global, B, nh, kvh, dq, dv, None, F32, cd),
                         [q, kc, vc, self.length], ((B, 1, nh * dv), F32))
        else:
            att = g.call(g.kernel(A.attention_decode_sliding, B, nh, kvh, dq, dv, W, M, F32, cd),
                         [q, kc, vc, self.count], ((B, 1, nh * dv), F32))
        return g.reshape(att, (B, C))

    def conv(self, plan, x):
        """x = (proj [B, rows], offset of the x columns)."""
        g, B, i = self.g, self.rows, plan.index
        C, K = g.c.d_inner, g.c.mamba_d_conv
        proj, offset = x
        step = g.kernel(conv.causal_conv1d_step, C, K, F32, x_columns=(g.rows(plan), offset))
        self.convs[i], xc = g.inplace(step, [self.convs[i], proj, g.w(f"l{i}.conv_w"),
                                             g.w(f"l{i}.conv_b")],
                                      [0, -1], ((B, K, C), F32), ((B, C), F32))
        return xc

    def scan(self, plan, xc, dt, Bm, Cm, z):
        """z = (proj [B, rows], offset of the z columns)."""
        g, B, i = self.g, self.rows, plan.index
        C, N = g.c.d_inner, g.c.mamba_d_state
        L = lambda name: g.w(f"l{i}.{name}")  # noqa: E731
        proj, offset = z
        update = g.kernel(scan.selective_state_update, C, N, F32,
                          z_columns=(g.rows(plan), offset))
        self.ssms[i], y = g.inplace(update,
                                    [self.ssms[i], xc, dt, L("A"), Bm, Cm, L("D"), proj,
                                     L("dt_bias")],
                                    [0, -1], ((B, N, C), F32), ((B, C), F32))
        return y

    def combine(self, plan, attn, y):
        """Norm-average + out_proj in one kernel (fusion `combine=unfused`: two kernels, as at
        prefill)."""
        g, B = self.g, self.rows
        H, C, wd, eps = g.c.hidden_size, g.c.d_inner, g.spec.weight_dtype, g.c.rms_norm_eps
        L = lambda name: g.w(f"l{plan.index}.{name}")  # noqa: E731
        if g.spec.fusion("combine") == "unfused":
            fused = g.call(g.kernel(combine.norm_average, C, wd, eps),
                           [attn, y, L("avg_norm1"), L("avg_norm2")], ((B, C), F32))
            return self.linear(H, C, fused, L("out_proj"))
        return g.call(g.kernel(combine.hybrid_combine_decode, B, C, H, wd, eps),
                      [attn, y, L("avg_norm1"), L("avg_norm2"), L("out_proj")], ((B, H), F32))

    def ffn(self, plan, v_in):
        g, B = self.g, self.rows
        H, FF, wd = g.c.hidden_size, g.c.intermediate_size, g.spec.weight_dtype
        L = lambda name: g.w(f"l{plan.index}.{name}")  # noqa: E731
        if g.spec.fusion("gate_up") == "unfused":
            act = unfused_gate_up(g, self, B, v_in, L("gate"), L("up"))
        else:
            act = g.call(g.kernel(combine.gate_up_decode, B, H, FF, wd),
                         [v_in, L("gate"), L("up")], ((B, FF), F32))
        return self.linear(H, FF, act, L("down"))


class PackedSteps(SequenceSteps):
    """The kernels of a layer over the prompts of B rows packed into one sequence of rows
    (batched prefill): the row-wise kernels (every linear, the norms, the combine, the FFN)
    run once over all rows, so each weight is read once per layer for the whole batch; the
    kernels that mix tokens along a sequence (attention, conv, scan) run per row, on the row's
    slice of the packed rows, with the row's own positions, prefix state and caches
    (`SequenceSteps` each), and their outputs are packed again. Pads never enter: each row
    brings only its real tokens."""

    def __init__(self, g, rows: list[SequenceSteps]):
        total = rows[0].rows
        for seg in rows[1:]:
            total = total + seg.rows
        super().__init__(g, total, None, rows[0].prefix, None)
        self.segments = rows
        self.starts = []
        start = 0
        for seg in rows:
            self.starts.append(start)
            start = start + seg.rows

    @property
    def convs(self):  # conv states per row, in row order (each row's list, layer by layer)
        return [s for seg in self.segments for s in seg.convs]

    @convs.setter
    def convs(self, value):  # SequenceSteps.__init__ sets an empty list
        pass

    @property
    def ssms(self):
        return [s for seg in self.segments for s in seg.ssms]

    @ssms.setter
    def ssms(self, value):
        pass

    @property
    def row_caches(self):
        return [c for seg in self.segments for c in seg.caches]

    def _split(self, x):
        """The packed rows x [T, ...] -> one slice per row [n_r, ...]."""
        return [self.g.bb.emit(relax.op.strided_slice(x, axes=[0], begin=[s], end=[s + seg.rows]))
                for s, seg in zip(self.starts, self.segments)]

    def _pack(self, parts):
        return self.g.bb.emit(relax.op.concat(parts, axis=0))

    def attention(self, plan, proj):
        return self._pack([seg.attention(plan, p) for seg, p in zip(self.segments,
                                                                    self._split(proj))])

    def conv(self, plan, x):
        return self._pack([seg.conv(plan, p) for seg, p in zip(self.segments, self._split(x))])

    def scan(self, plan, xc, dt, Bm, Cm, z):
        parts = zip(*(self._split(t) for t in (xc, dt, Bm, Cm, z)))
        return self._pack([seg.scan(plan, *p) for seg, p in zip(self.segments, parts)])
