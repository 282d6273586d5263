"""Hymba parameters under the official Hugging Face names: shapes, loading, saving, random init.

Names and shapes follow spec §2.2 (`HymbaForCausalLM.state_dict()` of the official code).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import HymbaConfig
from .errors import WeightsError
from .fileio import atomic_path

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
LM_HEAD = "lm_head.weight"
EMBED = "model.embed_tokens.weight"


def layer_parameter_shapes(config: HymbaConfig, index: int, owns_kv: bool) -> dict[str, tuple]:
    """Shapes of one decoder layer's 19 tensors (spec §2.2)."""
    h, di, n, r = config.hidden_size, config.d_inner, config.mamba_d_state, config.mamba_dt_rank
    f = config.intermediate_size
    rows = config.in_proj_rows_owner if owns_kv else config.in_proj_rows_consumer
    p = f"model.layers.{index}."
    shapes = {
        p + "input_layernorm.weight": (h,),
        p + "mamba.in_proj.weight": (rows, h),
        p + "mamba.conv1d.weight": (di, 1, config.mamba_d_conv),
    }
    if config.mamba_conv_bias:
        shapes[p + "mamba.conv1d.bias"] = (di,)
    shapes.update({
        p + "mamba.x_proj.0.weight": (r + 2 * n, di),
        p + "mamba.dt_proj.0.weight": (di, r),
        p + "mamba.dt_proj.0.bias": (di,),
        p + "mamba.A_log.0": (di, n),
        p + "mamba.D.0": (di,),
    })
    if config.mamba_inner_layernorms:
        shapes.update({
            p + "mamba.dt_layernorm.weight": (r,),
            p + "mamba.B_layernorm.weight": (n,),
            p + "mamba.C_layernorm.weight": (n,),
        })
    shapes.update({
        p + "mamba.pre_avg_layernorm1.weight": (di,),
        p + "mamba.pre_avg_layernorm2.weight": (di,),
        p + "mamba.out_proj.weight": (h, di),
        p + "pre_moe_layernorm.weight": (h,),
        p + "moe.experts.0.gate_proj.weight": (f, h),
        p + "moe.experts.0.up_proj.weight": (f, h),
        p + "moe.experts.0.down_proj.weight": (h, f),
    })
    return shapes


def parameter_shapes(config: HymbaConfig) -> dict[str, tuple]:
    """Every tensor of the checkpoint with its shape; lm_head only when it is not tied."""
    shapes = {EMBED: (config.vocab_size, config.hidden_size)}
    if config.num_memory_tokens:
        shapes["model.memory_tokens"] = (config.num_memory_tokens, config.hidden_size)
    for plan in config.layer_plan():
        shapes.update(layer_parameter_shapes(config, plan.index, plan.owns_kv))
    shapes["model.final_layernorm.weight"] = (config.hidden_size,)
    if not config.tie_word_embeddings:
        shapes[LM_HEAD] = (config.vocab_size, config.hidden_size)
    return shapes


def parameter_count(config: HymbaConfig) -> int:
    """Parameters without a tied lm_head (1,522,797,824 for Hymba-1.5B, spec §2.2)."""
    return sum(math.prod(s) for s in parameter_shapes(config).values())


def _checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder: one file, or the shards of an index."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightsError(f"{index} is not a valid safetensors index: {e}") from e
        files = sorted({folder / name for name in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WeightsError(f"{index} names shard files that do not exist: {', '.join(missing)}")
        return files
    single = folder / SINGLE_FILE
    if single.is_file():
        return [single]
    raise WeightsError(f"no {SINGLE_FILE} or {INDEX_FILE} in {folder}")


def load_parameters(folder: str | os.PathLike, config: HymbaConfig,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Read every parameter under its official name, cast to `dtype`, one tensor at a time.

    All names and shapes are checked before any tensor data is read; every missing, unexpected or
    mis-shaped tensor is reported in one WeightsError. A tied lm_head is dropped if stored.
    """
    folder = Path(folder)
    expected = parameter_shapes(config)
    found: dict[str, tuple[Path, tuple]] = {}
    try:
        for path in _checkpoint_files(folder):
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    found[name] = (path, tuple(f.get_slice(name).get_shape()))
    except SafetensorError as e:
        raise WeightsError(f"cannot read safetensors checkpoint in {folder}: {e}") from e

    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(f"missing {name} (expected shape {list(shape)})")
        elif found[name][1] != shape:
            problems.append(f"mis-shaped {name}: expected {list(shape)}, found {list(found[name][1])}")
    for name, (_, shape) in found.items():
        if name not in expected and not (name == LM_HEAD and config.tie_word_embeddings):
            problems.append(f"unexpected {name} (shape {list(shape)})")
    if problems:
        raise WeightsError(f"checkpoint {folder} does not match the config "
                           f"({len(problems)} problems): " + "; ".join(problems))

    params: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name in expected:
        by_file.setdefault(found[name][0], []).append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as f:
            for name in names:
                params[name] = f.get_tensor(name).to(dtype)
    return {name: params[name] for name in expected}


def save_parameters(folder: str | os.PathLike, config: HymbaConfig,
                    params: dict[str, torch.Tensor]) -> Path:
    """Write folder/model.safetensors atomically under the official names (tied lm_head omitted)."""
    expected = parameter_shapes(config)
    problems = [f"missing {n}" for n in expected if n not in params]
    problems += [f"mis-shaped {n}: expected {list(s)}, found {list(params[n].shape)}"
                 for n, s in expected.items() if n in params and tuple(params[n].shape) != s]
    problems += [f"unexpected {n}" for n in params
                 if n not in expected and not (n == LM_HEAD and config.tie_word_embeddings)]
    if problems:
        raise WeightsError("parameters do not match the config: " + "; ".join(problems))
    tensors = {n: params[n].detach().contiguous() for n in expected}
    target = Path(folder) / SINGLE_FILE
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return target


def random_parameters(config: HymbaConfig, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Seeded, well-scaled random parameters (Mamba/Llama-style init), created one at a time.

    Linears ~ N(0, 0.02) (out projections scaled by 1/sqrt(2*layers)), norms = 1,
    A_log = log(1..N), D = 1, dt bias = softplus^-1 of dt drawn log-uniform in [1e-3, 1e-1].
    """
    gen = torch.Generator().manual_seed(seed)
    std = 0.02
    out_std = std / math.sqrt(2 * config.num_hidden_layers)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if "layernorm" in name:
            t = torch.ones(shape)
        elif name.endswith("A_log.0"):
            t = torch.log(torch.arange(1, shape[1] + 1, dtype=torch.float32)).repeat(shape[0], 1)
        elif name.endswith("D.0"):
            t = torch.ones(shape)
        elif name.endswith("dt_proj.0.bias"):
            dt = torch.exp(torch.rand(shape, generator=gen) * (math.log(0.1) - math.log(1e-3))
                           + math.log(1e-3))
            t = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
        elif name.endswith("dt_proj.0.weight"):
            bound = config.mamba_dt_rank ** -0.5
            t = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        elif name.endswith("conv1d.weight") or name.endswith("conv1d.bias"):
            bound = config.mamba_d_conv ** -0.5
            t = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        elif "out_proj" in name or "down_proj" in name:
            t = torch.randn(shape, generator=gen) * out_std
        else:
            t = torch.randn(shape, generator=gen) * std
        params[name] = t.to(dtype)
    return params
