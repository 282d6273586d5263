"""The weights as the compiled program takes them: names, shapes, dtypes and the layout
transforms of `docs/runtime-plan.md`, computed once at load from the official parameters.

Big matrices (in_proj, x_proj, dt_proj, out_proj, the FFN, the tied embedding / lm_head) keep the
checkpoint's dtype (float32 or bfloat16): they are what decode streams. Every small vector the
kernels read in float32 (norm weights, conv taps and bias, A, D, dt bias, meta tokens) is upcast
once, which is exact for bf16 values. The pre-average norms stay in the weight dtype because
`hybrid_combine_decode` reads them alongside out_proj.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import HymbaConfig

TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class WeightSpec:
    """One program parameter: its name, shape and dtype (a TVM dtype name)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def layer_weight_specs(config: HymbaConfig, i: int, owns_kv: bool, wdtype: str) -> list[WeightSpec]:
    """The parameters of decoder layer i, in program order."""
    c = config
    H, C, N, r, K, FF = (c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_dt_rank,
                         c.mamba_d_conv, c.intermediate_size)
    rows = c.in_proj_rows_owner if owns_kv else c.in_proj_rows_consumer
    f32 = "float32"
    specs = [("input_norm", (H,), f32), ("in_proj", (rows, H), wdtype), ("conv_w", (K, C), f32),
             ("conv_b", (C,), f32), ("x_proj", (r + 2 * N, C), wdtype)]
    if c.mamba_inner_layernorms:
        specs += [("dt_norm", (r,), f32), ("B_norm", (N,), f32), ("C_norm", (N,), f32)]
    specs += [("dt_proj", (C, r), wdtype), ("dt_bias", (C,), f32), ("A", (N, C), f32),
              ("D", (C,), f32), ("avg_norm1", (C,), wdtype), ("avg_norm2", (C,), wdtype),
              ("out_proj", (H, C), wdtype), ("pre_moe_norm", (H,), f32), ("gate", (FF, H), wdtype),
              ("up", (FF, H), wdtype), ("down", (H, FF), wdtype)]
    return [WeightSpec(f"l{i}.{name}", shape, dtype) for name, shape, dtype in specs]


def weight_specs(config: HymbaConfig, wdtype: str) -> list[WeightSpec]:
    """Every program parameter in order: embedding (also the tied lm_head), meta tokens, final
    norm, then the layers."""
    c = config
    specs = [WeightSpec("embed", (c.vocab_size, c.hidden_size), wdtype),
             WeightSpec("meta", (c.num_memory_tokens, c.hidden_size), "float32"),
             WeightSpec("final_norm", (c.hidden_size,), "float32")]
    for plan in c.layer_plan():
        specs += layer_weight_specs(c, plan.index, plan.owns_kv, wdtype)
    return specs


def _official(params: dict[str, torch.Tensor], config: HymbaConfig, name: str) -> torch.Tensor:
    """The official tensor(s) behind one program parameter, transformed to its layout."""
    if name == "embed":
        return params["model.embed_tokens.weight"]
    if name == "meta":
        return params["model.memory_tokens"]
    if name == "final_norm":
        return params["model.final_layernorm.weight"]
    layer, short = name.split(".", 1)
    p = f"model.layers.{int(layer[1:])}."
    m = p + "mamba."
    if short == "conv_w":
        return params[m + "conv1d.weight"][:, 0, :].t()  # [C, 1, K] -> [K, C]
    if short == "conv_b":
        bias = params.get(m + "conv1d.bias")
        return bias if bias is not None else torch.zeros(config.d_inner)
    if short == "A":
        return -torch.exp(params[m + "A_log.0"].float()).t()  # [C, N] -> [N, C], as reference._A
    official = {"input_norm": p + "input_layernorm.weight", "in_proj": m + "in_proj.weight",
                "x_proj": m + "x_proj.0.weight", "dt_norm": m + "dt_layernorm.weight",
                "B_norm": m + "B_layernorm.weight", "C_norm": m + "C_layernorm.weight",
                "dt_proj": m + "dt_proj.0.weight", "dt_bias": m + "dt_proj.0.bias", "D": m + "D.0",
                "avg_norm1": m + "pre_avg_layernorm1.weight",
                "avg_norm2": m + "pre_avg_layernorm2.weight", "out_proj": m + "out_proj.weight",
                "pre_moe_norm": p + "pre_moe_layernorm.weight",
                "gate": p + "moe.experts.0.gate_proj.weight", "up": p + "moe.experts.0.up_proj.weight",
                "down": p + "moe.experts.0.down_proj.weight"}
    return params[official[short]]


def program_weights(config: HymbaConfig, params: dict[str, torch.Tensor],
                    wdtype: str) -> list[torch.Tensor]:
    """The official parameters as the program's ordered parameter list: contiguous tensors in
    their own allocations (the kernels assume 64-byte-aligned data). A tensor already in the
    right dtype and layout is shared, not copied, so the weights are held once."""
    out = []
    for spec in weight_specs(config, wdtype):
        t = _official(params, config, spec.name).to(TORCH[spec.dtype])
        if tuple(t.shape) != spec.shape:
            raise ValueError(f"weight {spec.name}: shape {tuple(t.shape)} != {spec.shape}")
        if not t.is_contiguous() or t.storage_offset() or t.data_ptr() % 64:
            t = t.clone(memory_format=torch.contiguous_format)
        out.append(t)
    return out
