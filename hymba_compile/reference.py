"""Eager PyTorch Hymba: the oracle every compiled kernel and the compiled model are checked against.

Plain math, one function per piece, each naming the official code (spec sections in brackets) it
mirrors. Works in float32 and bfloat16 on CPU. Imports nothing compiled.

Batching with left padding (spec §10, which the official code cannot do): within the packed
sequence the pads of a row are moved in front of the meta tokens, `[pads; meta; tokens]`, so that
the conv and the scan see zeros before the sequence exactly as an unpadded row does; pads are never
attention keys, their conv input and SSM input are zero and they leave the SSM state unchanged.
Masks are written over token *positions* (meta tokens take 0..M-1, the first real token M), which
for a row without pads equal the packed indices the official masks use.

Window semantics (spec §3.5, §4.2, pitfall P16), reproduced deliberately:
  prefill  query at position i sees keys j <= i with i - j <= W, or j < M (meta)   -> W+1 tokens
  decode   query at position i sees keys j <= i with i - j <= W - 1, or j < M     -> W tokens
The official decode cache realises the second rule by physically truncating to meta + the last
W-1 entries before appending; the reference keeps every entry and masks, which is equivalent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import GLOBAL, HymbaConfig, LayerPlan


# ---------------------------------------------------------------------------------------------
# Pieces (each a twin of one compiled kernel)
# ---------------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HymbaRMSNorm [§3]: fp32 statistics, cast back to the input dtype, then times the weight."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then HymbaRMSNorm [§3.8]: (h = x + residual, rms_norm(h))."""
    h = x + residual
    return h, rms_norm(h, weight, eps)


def rope_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    """LlamaRotaryEmbedding.inv_freq [§3.4] with the static-NTK base: [head_dim/2] float32."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [b, T, head_dim] for integer positions [b, T]; fp32 math, cast to `dtype` [§3.4]."""
    inv_freq = rope_inv_freq(head_dim, base).to(positions.device)
    freqs = positions.float()[..., None] * inv_freq  # [b, T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb [§3.4], non-interleaved: x [b, heads, T, d], cos/sin [b, T, d]."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def visible_keys(q_pos: torch.Tensor, k_pos: torch.Tensor, k_valid: torch.Tensor,
                 attention: str, window: int, num_meta: int) -> torch.Tensor:
    """Hymba attention mask [§3.5] over positions: [b, T] x [b, S] -> bool [b, T, S].

    Causal for global layers; for sliding layers also `q - k <= window` unless the key is a meta
    token. Pass window = W at prefill and W - 1 at decode (see the module docstring). Keys that are
    pads (k_valid False) are never visible; a pad query (position -1) sees nothing.
    """
    qp, kp = q_pos[:, :, None], k_pos[:, None, :]
    allowed = k_valid[:, None, :] & (kp <= qp) & (qp >= 0)
    if attention != GLOBAL:
        allowed = allowed & ((qp - kp <= window) | (kp < num_meta))
    return allowed


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              visible: torch.Tensor) -> torch.Tensor:
    """Softmax attention with GQA [§3.2]; q [b,H,T,dq], k [b,KV,S,dq], v [b,KV,S,dv],
    visible [b,T,S] -> [b, T, H*dv] in q's dtype. Scale 1/sqrt(dq); fp32 softmax, as flash does.
    A query with no visible key outputs zeros (never NaN)."""
    b, heads, t, dq = q.shape
    rep = heads // k.shape[1]
    k = k.repeat_interleave(rep, dim=1).float()
    v = v.repeat_interleave(rep, dim=1).float()
    scores = torch.matmul(q.float(), k.transpose(-1, -2)) * dq ** -0.5  # [b, H, T, S]
    mask = visible[:, None]
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(mask.any(-1, keepdim=True), probs, torch.zeros_like(probs))
    out = torch.matmul(probs, v)  # [b, H, T, dv]
    return out.transpose(1, 2).reshape(b, t, heads * v.shape[-1]).to(q.dtype)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """causal_conv1d_fn + SiLU [§3.3 step 1]: x [b, C, T], weight [C, 1, K] -> [b, C, T].
    Zero left padding; tap K-1 multiplies the current token; fp32 math, output in x's dtype."""
    k = weight.shape[-1]
    y = F.conv1d(x.float(), weight.float(), None if bias is None else bias.float(),
                 padding=k - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(y).to(x.dtype)


def conv_state_after(x: torch.Tensor, width: int) -> torch.Tensor:
    """Conv state after prefill [§4.3]: the last `width` raw inputs, zero-padded on the left."""
    t = x.shape[-1]
    return F.pad(x, (width - t, 0)) if t < width else x[..., -width:].clone()


def causal_conv1d_step(state: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """causal_conv1d_update + SiLU [§4.3]: state [b, C, K] (oldest first), x [b, C]
    -> (x' [b, C] in x's dtype, new state)."""
    state = torch.cat((state[..., 1:], x[..., None].to(state.dtype)), dim=-1)
    y = (state.float() * weight[:, 0, :].float()).sum(-1)
    if bias is not None:
        y = y + bias.float()
    return F.silu(y).to(x.dtype), state


def scan_step_inputs(u: torch.Tensor, delta: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor,
                     step_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 (u, softplus(delta + delta_bias), z) of the scan [§3.3 step 5]; masked steps get
    delta = 0 and u = 0, so they keep the state and output 0."""
    u, z = u.float(), z.float()
    delta = F.softplus(delta.float() + delta_bias.float()[:, None])  # [b, D, T]
    if step_mask is not None:
        keep = step_mask[:, None, :].to(torch.float32)
        delta, u = delta * keep, u * keep
    return u, delta, z


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor,
                   initial_state: torch.Tensor | None = None,
                   step_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan, mamba_ssm `selective_scan_ref` with delta_softplus [§3.3 step 5].

    u, delta, z [b, D, T]; A [D, N] (already -exp(A_log)); B, C [b, N, T]; D, delta_bias [D];
    initial_state [b, D, N] or zeros. All math in fp32.
    step_mask [b, T] (our padding extension): where False the state is carried unchanged
    (delta forced to 0) and the output is 0.
    Returns y [b, D, T] in u's dtype (gated by silu(z), with the D skip) and the last state fp32.
    """
    dtype = u.dtype
    u, delta, z = scan_step_inputs(u, delta, z, delta_bias, step_mask)
    A, B, C = A.float(), B.float(), C.float()
    b, d, t = u.shape
    state = (torch.zeros(b, d, A.shape[1], device=u.device) if initial_state is None
             else initial_state.float().clone())
    ys = []
    for i in range(t):
        dt = delta[:, :, i, None]  # [b, D, 1]
        state = torch.exp(dt * A) * state + dt * B[:, None, :, i] * u[:, :, i, None]
        ys.append((state * C[:, None, :, i]).sum(-1))  # [b, D]
    y = torch.stack(ys, dim=-1) + u * D.float()[:, None]
    y = y * F.silu(z)
    if step_mask is not None:
        y = y * step_mask[:, None, :]
    return y.to(dtype), state


def selective_state_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor,
                           A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
                           z: torch.Tensor, dt_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mamba_ssm `selective_state_update` with dt_softplus [§4.3 step 2], fp32 math.
    state [b, D, N] fp32; x, dt, z [b, D]; B, C [b, N] -> (y [b, D] in x's dtype, new state)."""
    delta = F.softplus(dt.float() + dt_bias.float())  # [b, D]
    new_state = (torch.exp(delta[..., None] * A.float()) * state.float()
                 + (delta * x.float())[..., None] * B.float()[:, None, :])
    y = (new_state * C.float()[:, None, :]).sum(-1) + D.float() * x.float()
    y = y * F.silu(z.float())
    return y.to(x.dtype), new_state


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """nn.Linear without bias, in x's dtype: x [..., K] @ weight[N, K]^T -> [..., N]. With bf16
    weights and fp32 x this is the 'bf16 weights, fp32 accumulation' linear of the kernels."""
    return F.linear(x, weight.to(x.dtype))


def ssm_input_split(s: torch.Tensor, dt_rank: int, d_state: int, dt_norm_w: torch.Tensor | None,
                    B_norm_w: torch.Tensor | None, C_norm_w: torch.Tensor | None,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_proj output s [..., r + 2N] -> (dt_raw [..., r], B [..., N], C [..., N]), each through its
    inner RMSNorm when weights are given [§3.3 steps 2-3, pitfall P5]."""
    dt, B, C = s.split([dt_rank, d_state, d_state], dim=-1)
    if dt_norm_w is not None:
        dt, B, C = rms_norm(dt, dt_norm_w, eps), rms_norm(B, B_norm_w, eps), rms_norm(C, C_norm_w, eps)
    return dt, B, C


def final_logits(h: torch.Tensor, norm_w: torch.Tensor, head_w: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """final_layernorm then the (tied) lm_head, logits cast to fp32 [§3.9 steps 4-6]."""
    return F.linear(rms_norm(h, norm_w, eps), head_w).float()


def swiglu(x: torch.Tensor, gate_w: torch.Tensor, up_w: torch.Tensor,
           down_w: torch.Tensor) -> torch.Tensor:
    """HymbaMLP with silu [§3.8]: down(silu(gate(x)) * up(x))."""
    return F.linear(F.silu(F.linear(x, gate_w)) * F.linear(x, up_w), down_w)


def hybrid_combine(attn_out: torch.Tensor, ssm_out: torch.Tensor, norm1_w: torch.Tensor,
                   norm2_w: torch.Tensor, out_w: torch.Tensor, eps: float) -> torch.Tensor:
    """Fusion [§3.7]: out_proj((rms1(attn) + rms2(ssm)) / 2); inputs [..., d_inner]."""
    fused = (rms_norm(attn_out, norm1_w, eps) + rms_norm(ssm_out, norm2_w, eps)) / 2
    return F.linear(fused, out_w)


# ---------------------------------------------------------------------------------------------
# Whole model
# ---------------------------------------------------------------------------------------------

@dataclass
class ReferenceCache:
    """Decode state after prefill [§4.1]. K/V for layers that own them (consumers read their
    producer's), key positions/validity shared by all layers, conv and fp32 SSM state per layer."""

    keys: dict[int, torch.Tensor]  # layer -> [b, KV, S, dq] post-RoPE
    values: dict[int, torch.Tensor]  # layer -> [b, KV, S, dv]
    key_pos: torch.Tensor  # [b, S] int64 position of each cache slot (-1 for pads)
    key_valid: torch.Tensor  # [b, S] bool
    conv: list[torch.Tensor]  # per layer [b, d_inner, d_conv] raw inputs, activation dtype
    ssm: list[torch.Tensor]  # per layer [b, d_inner, N] float32
    next_pos: torch.Tensor  # [b] position of the next token


class HymbaReference:
    """HymbaForCausalLM forward with the official math [§3, §4], prefill and cached decode."""

    def __init__(self, config: HymbaConfig, params: dict[str, torch.Tensor],
                 official_state_rounding: bool = False, scan=selective_scan):
        """`official_state_rounding` rounds the SSM state to the parameter dtype after prefill and
        each decode step, as the official cache does (pitfall P9); the default keeps it in fp32.
        `scan` replaces `selective_scan` at prefill (same signature; training uses a faster one)."""
        self.config = config
        self.scan = scan
        self.params = params
        self.plan: list[LayerPlan] = config.layer_plan()
        self.dtype = params["model.embed_tokens.weight"].dtype
        self.official_state_rounding = official_state_rounding

    def _p(self, layer: int, name: str) -> torch.Tensor | None:
        return self.params.get(f"model.layers.{layer}.{name}")

    @property
    def lm_head(self) -> torch.Tensor:
        return self.params.get("lm_head.weight", self.params["model.embed_tokens.weight"])

    # ---- one layer ---------------------------------------------------------------------------
    def _split_in_proj(self, plan: LayerPlan, proj: torch.Tensor):
        """in_proj rows [§3.1]: q,k,v,x,z (owners) or q,x,z (consumers); proj [b, T, rows]."""
        c = self.config
        nq = c.num_attention_heads * c.qk_head_dim
        if plan.owns_kv:
            nk, nv = c.num_key_value_heads * c.qk_head_dim, c.num_key_value_heads * c.v_dim
            q, k, v, x, z = proj.split([nq, nk, nv, c.d_inner, c.d_inner], dim=-1)
        else:
            (q, x, z), k, v = proj.split([nq, c.d_inner, c.d_inner], dim=-1), None, None
        return q, k, v, x, z

    def _project(self, plan: LayerPlan, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """input norm + in_proj, heads and RoPE [§3.1-3.4]: h [b, T, H] -> (q [b,H,T,dq] roped,
        k [b,KV,T,dq] roped and v [b,KV,T,dv] (None for consumers), x, z [b, T, d_inner])."""
        c, i = self.config, plan.index
        hn = rms_norm(h, self._p(i, "input_layernorm.weight"), c.rms_norm_eps)
        q, k, v, x, z = self._split_in_proj(plan, F.linear(hn, self._p(i, "mamba.in_proj.weight")))
        q = self._heads(q, c.num_attention_heads)
        if c.rope:
            q = apply_rope(q, cos, sin)
        if plan.owns_kv:
            k, v = self._heads(k, c.num_key_value_heads), self._heads(v, c.num_key_value_heads)
            if c.rope:
                k = apply_rope(k, cos, sin)
        return q, k, v, x, z

    def _heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        """[b, T, heads*d] -> [b, heads, T, d]."""
        b, n, _ = t.shape
        return t.view(b, n, heads, -1).transpose(1, 2)

    def _ssm_inputs(self, i: int, xc: torch.Tensor):
        """x_proj, split and inner RMSNorms, dt_proj without bias [§3.3 steps 2-4];
        xc [b, T, d_inner] (post conv) -> dt [b, T, d_inner], B, C [b, T, N]."""
        c = self.config
        norms = (self._p(i, "mamba.dt_layernorm.weight"), self._p(i, "mamba.B_layernorm.weight"),
                 self._p(i, "mamba.C_layernorm.weight")) if c.mamba_inner_layernorms else (None,) * 3
        dt, B, C = ssm_input_split(F.linear(xc, self._p(i, "mamba.x_proj.0.weight")),
                                   c.mamba_dt_rank, c.mamba_d_state, *norms, c.rms_norm_eps)
        return F.linear(dt, self._p(i, "mamba.dt_proj.0.weight")), B, C

    def _A(self, i: int) -> torch.Tensor:
        return -torch.exp(self._p(i, "mamba.A_log.0").float())

    def _mixer_tail_and_ffn(self, i: int, h: torch.Tensor, attn_out: torch.Tensor,
                            ssm_out: torch.Tensor) -> torch.Tensor:
        """Fusion + out_proj + residual, then pre_moe norm + SwiGLU + residual [§3.7, §3.8]."""
        c = self.config
        mixed = hybrid_combine(attn_out, ssm_out, self._p(i, "mamba.pre_avg_layernorm1.weight"),
                               self._p(i, "mamba.pre_avg_layernorm2.weight"),
                               self._p(i, "mamba.out_proj.weight"), c.rms_norm_eps)
        h, v = add_rms_norm(mixed, h, self._p(i, "pre_moe_layernorm.weight"), c.rms_norm_eps)
        return h + swiglu(v, self._p(i, "moe.experts.0.gate_proj.weight"),
                          self._p(i, "moe.experts.0.up_proj.weight"),
                          self._p(i, "moe.experts.0.down_proj.weight"))

    # ---- prefill -----------------------------------------------------------------------------
    def _pack(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """Embed and prepend meta tokens [§3.9], pads moved before the meta tokens.
        -> hidden [b, M+n, H], valid [b, M+n] bool, positions [b, M+n] (-1 at pads),
        real [b, n] bool (the input positions that are not pads)."""
        c = self.config
        b, n = input_ids.shape
        emb = F.embedding(input_ids, self.params["model.embed_tokens.weight"])
        m = c.num_memory_tokens
        meta = self.params.get("model.memory_tokens", emb.new_zeros(0, c.hidden_size))
        if attention_mask is None:
            attention_mask = torch.ones(b, n, dtype=torch.bool, device=input_ids.device)
        real = attention_mask.bool()
        pads = (~real).sum(-1)  # [b]; left padding: the first pads[r] tokens of row r
        rows, valid = [], []
        for r in range(b):
            p = int(pads[r])
            rows.append(torch.cat((emb[r, :p], meta.to(emb.dtype), emb[r, p:]), dim=0))
            valid.append(torch.cat((real.new_zeros(p), real.new_ones(m + n - p))))
        valid_t = torch.stack(valid)
        positions = torch.cumsum(valid_t.long(), dim=-1) - 1
        positions = positions.masked_fill(~valid_t, -1)
        return torch.stack(rows), valid_t, positions, real

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                want_cache: bool = True,
                last_only: bool = False) -> tuple[torch.Tensor, ReferenceCache | None]:
        """Prompt forward [§3]: input_ids [b, n] (left-padded where attention_mask has zeros)
        -> (logits [b, n, vocab] float32, zero at pad positions, or only the last position's
        [b, 1, vocab] with `last_only`; the decode cache)."""
        c = self.config
        h, valid, pos, real = self._pack(input_ids, attention_mask)
        b, t, _ = h.shape
        cos, sin = rope_cos_sin(pos.clamp(min=0), c.qk_head_dim, c.rope_base, self.dtype)
        keep = valid[..., None]
        keys, values, kv = {}, {}, {}
        conv_states, ssm_states = [], []
        for plan in self.plan:
            i = plan.index
            q, k, v, x, z = self._project(plan, h, cos, sin)
            if plan.owns_kv:
                kv[i] = (k, v)
            k, v = kv[plan.kv_source]
            vis = visible_keys(pos, pos, valid, plan.attention, c.sliding_window, c.num_memory_tokens)
            attn_out = attention(q, k, v, vis)
            # SSM branch: pads contribute zeros to the conv and leave the state untouched
            x = (x * keep).transpose(1, 2)  # [b, d_inner, T]
            xc = causal_conv1d(x, self._p(i, "mamba.conv1d.weight"), self._p(i, "mamba.conv1d.bias"))
            dt, B, C = self._ssm_inputs(i, xc.transpose(1, 2))
            y, state = self.scan(xc, dt.transpose(1, 2), self._A(i), B.transpose(1, 2),
                                      C.transpose(1, 2), self._p(i, "mamba.D.0"), z.transpose(1, 2),
                                      self._p(i, "mamba.dt_proj.0.bias"), step_mask=valid)
            h = self._mixer_tail_and_ffn(i, h, attn_out, y.transpose(1, 2))
            if want_cache:
                conv_states.append(conv_state_after(x, c.mamba_d_conv))
                ssm_states.append(self._round_state(state))
        n = input_ids.shape[1]
        logits = final_logits(h[:, c.num_memory_tokens:], self.params["model.final_layernorm.weight"],
                              self.lm_head, c.rms_norm_eps)  # [b, n, vocab]
        logits = logits.masked_fill(~real[..., None], 0.0)
        cache = None
        if want_cache:
            keys = {i: kv_i[0] for i, kv_i in kv.items()}
            values = {i: kv_i[1] for i, kv_i in kv.items()}
            cache = ReferenceCache(keys, values, pos, valid, conv_states, ssm_states,
                                   next_pos=pos[:, -1] + 1)
        assert logits.shape[1] == n
        return (logits[:, -1:] if last_only else logits), cache

    def _round_state(self, state: torch.Tensor) -> torch.Tensor:
        if self.official_state_rounding:
            return state.to(self.dtype).float()
        return state

    # ---- decode ------------------------------------------------------------------------------
    def decode(self, cache: ReferenceCache, token_ids: torch.Tensor) -> torch.Tensor:
        """One cached decode step [§4]: token_ids [b] -> logits [b, vocab] float32.
        Updates `cache` in place (appends K/V, advances conv/SSM state and positions)."""
        c = self.config
        pos = cache.next_pos[:, None]  # [b, 1]
        h = F.embedding(token_ids[:, None], self.params["model.embed_tokens.weight"])  # [b, 1, H]
        cos, sin = rope_cos_sin(pos, c.qk_head_dim, c.rope_base, self.dtype)
        cache.key_pos = torch.cat((cache.key_pos, pos), dim=1)
        cache.key_valid = torch.cat((cache.key_valid, torch.ones_like(pos, dtype=torch.bool)), dim=1)
        for plan in self.plan:
            i = plan.index
            q, k, v, x, z = self._project(plan, h, cos, sin)
            if plan.owns_kv:
                cache.keys[i] = torch.cat((cache.keys[i], k), dim=2)
                cache.values[i] = torch.cat((cache.values[i], v), dim=2)
            src = plan.kv_source
            vis = visible_keys(pos, cache.key_pos, cache.key_valid, plan.attention,
                               c.sliding_window - 1, c.num_memory_tokens)
            attn_out = attention(q, cache.keys[src], cache.values[src], vis)
            xc, cache.conv[i] = causal_conv1d_step(cache.conv[i], x[:, 0], self._p(i, "mamba.conv1d.weight"),
                                                   self._p(i, "mamba.conv1d.bias"))
            dt, B, C = self._ssm_inputs(i, xc[:, None])
            y, state = selective_state_update(cache.ssm[i], xc, dt[:, 0], self._A(i), B[:, 0], C[:, 0],
                                              self._p(i, "mamba.D.0"), z[:, 0],
                                              self._p(i, "mamba.dt_proj.0.bias"))
            cache.ssm[i] = self._round_state(state)
            h = self._mixer_tail_and_ffn(i, h, attn_out, y[:, None])
        cache.next_pos = cache.next_pos + 1
        return final_logits(h[:, 0], self.params["model.final_layernorm.weight"], self.lm_head,
                            c.rms_norm_eps)
