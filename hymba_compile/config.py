"""HymbaConfig <-> Hugging Face config.json, the presets, and the derived layer plan.

Mirrors `configuration_hymba.HymbaConfig` of the official code (spec §1) and the layer classes of
spec §2.1: global layers, sliding-window K/V producers and sliding-window K/V consumers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelNotFoundError
from .fileio import atomic_write_text

GLOBAL = "global"
SLIDING = "sliding"


@dataclass(frozen=True)
class LayerPlan:
    """What one decoder layer does with attention: its mask kind and where its K/V come from."""

    index: int
    attention: str  # GLOBAL or SLIDING
    owns_kv: bool  # computes K/V from its own in_proj (in_proj has q,k,v,x,z rows)
    kv_source: int  # layer whose (post-RoPE) K/V this layer attends over; == index when owns_kv

    @property
    def is_consumer(self) -> bool:
        return not self.owns_kv


@dataclass
class HymbaConfig:
    """The architecture fields of an official Hymba config.json (names as in the file)."""

    vocab_size: int = 32001
    hidden_size: int = 1600
    intermediate_size: int = 5504
    num_hidden_layers: int = 32
    num_attention_heads: int = 25
    num_key_value_heads: int = 5
    attn_hidden_size: int = -1
    kq_head_dim: int = -1
    v_head_dim: int = -1
    kq_norm: str | None = "none"
    rope: bool = True
    rope_theta: float = 10000.0
    rope_type: str | None = "ntk"
    max_position_embeddings: int = 8192
    orig_max_position_embeddings: int = 2048
    sliding_window: int = 1024
    global_attn_idx: list[int] = field(default_factory=lambda: [0, 15, 31])
    kv_reuse_group: list[list[int]] = field(default_factory=list)
    num_memory_tokens: int = 128
    memory_tokens_interspersed_every: int = 0
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_dt_rank: int = 100
    mamba_conv_bias: bool = True
    mamba_proj_bias: bool = False
    mamba_inner_layernorms: bool = True
    hidden_act: str = "silu"
    mlp_hidden_act: str = "silu"
    num_experts: int = 1
    num_mamba: int = 1
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = 0
    torch_dtype: str = "bfloat16"
    # Everything else found in config.json, kept verbatim so that saving round-trips the file.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.global_attn_idx = [int(i) for i in self.global_attn_idx]
        self.kv_reuse_group = [[int(i) for i in g] for g in self.kv_reuse_group]
        self.validate()

    # ---- derived sizes (spec §1) -------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        """SSM inner width (3200 for Hymba-1.5B)."""
        return self.mamba_expand * self.hidden_size

    @property
    def attn_width(self) -> int:
        """Width of the q projection (attn_hidden_size, or hidden_size when -1)."""
        return self.hidden_size if self.attn_hidden_size in (-1, None) else self.attn_hidden_size

    @property
    def qk_head_dim(self) -> int:
        """Head dim of q and k (64 for Hymba-1.5B)."""
        if self.kq_head_dim not in (-1, None):
            return self.kq_head_dim
        return self.attn_width // self.num_attention_heads

    @property
    def v_dim(self) -> int:
        """Head dim of v: d_inner / heads (128 for Hymba-1.5B), as HymbaBlock overwrites it."""
        return self.d_inner // self.num_attention_heads

    @property
    def kv_groups(self) -> int:
        """Query heads per K/V head (GQA)."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def in_proj_rows_owner(self) -> int:
        """Rows of in_proj for a layer with its own K/V: q, k, v, x, z (spec §3.1)."""
        h = self.num_attention_heads
        kv = self.num_key_value_heads
        return h * self.qk_head_dim + kv * self.qk_head_dim + kv * self.v_dim + 2 * self.d_inner

    @property
    def in_proj_rows_consumer(self) -> int:
        """Rows of in_proj for a K/V consumer layer: q, x, z."""
        return self.num_attention_heads * self.qk_head_dim + 2 * self.d_inner

    @property
    def eos_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, list) else [self.eos_token_id]

    @property
    def rope_base(self) -> float:
        """RoPE base: the static NTK scaling of spec §3.4 (factor 2), applied at all lengths."""
        if self.rope_type == "ntk":
            factor = 2.0
            dim = self.qk_head_dim
            ratio = factor * self.max_position_embeddings / self.orig_max_position_embeddings
            return self.rope_theta * (ratio - (factor - 1.0)) ** (dim / (dim - 2))
        return float(self.rope_theta)

    @property
    def max_context(self) -> int:
        """Most real tokens (prompt + generated) the model accepts: positions past the meta prefix."""
        return self.max_position_embeddings

    # ---- layer plan (spec §2.1, §3.6) --------------------------------------------------------
    def layer_plan(self) -> list[LayerPlan]:
        """For each layer: global or sliding attention, whether it owns K/V, whose K/V it reads."""
        producer_of = {}
        for group in self.kv_reuse_group:
            for consumer in group[1:]:
                producer_of[consumer] = group[0]
        globals_ = set(self.global_attn_idx)
        return [
            LayerPlan(
                index=i,
                attention=GLOBAL if i in globals_ else SLIDING,
                owns_kv=i not in producer_of,
                kv_source=producer_of.get(i, i),
            )
            for i in range(self.num_hidden_layers)
        ]

    def kv_cache_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        """K/V cache bytes per token summed over the layers that own K/V (consumers store none)."""
        per_layer = self.num_key_value_heads * (self.qk_head_dim + self.v_dim) * bytes_per_element
        return per_layer * sum(p.owns_kv for p in self.layer_plan())

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistency found."""
        def fail(msg: str) -> None:
            raise ConfigError(f"invalid Hymba config: {msg}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "mamba_d_state", "mamba_d_conv",
                     "mamba_expand", "mamba_dt_rank", "sliding_window", "max_position_embeddings",
                     "orig_max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_memory_tokens, int) or self.num_memory_tokens < 0:
            fail(f"num_memory_tokens must be a non-negative integer, got {self.num_memory_tokens!r}")
        if self.attn_width % self.num_attention_heads:
            fail(f"num_attention_heads ({self.num_attention_heads}) does not divide the attention "
                 f"width ({self.attn_width})")
        if self.num_attention_heads % self.num_key_value_heads:
            fail(f"num_key_value_heads ({self.num_key_value_heads}) does not divide "
                 f"num_attention_heads ({self.num_attention_heads})")
        if self.d_inner % self.num_attention_heads:
            fail(f"num_attention_heads ({self.num_attention_heads}) does not divide the SSM width "
                 f"mamba_expand*hidden_size ({self.d_inner}), so v heads cannot fill it")
        if self.v_head_dim not in (-1, None) and self.v_head_dim != self.v_dim:
            fail(f"v_head_dim is {self.v_head_dim} but d_inner/num_attention_heads is {self.v_dim}")
        if self.rope and self.qk_head_dim % 2:
            fail(f"RoPE needs an even q/k head dim, got {self.qk_head_dim}")
        if self.rope_type not in (None, "ntk", "default"):
            fail(f"rope_type {self.rope_type!r} is not supported (expected 'ntk')")
        if self.kq_norm not in (None, "none"):
            fail(f"kq_norm {self.kq_norm!r} is not supported (official Hymba uses 'none')")
        if self.num_experts != 1:
            fail(f"num_experts must be 1 (Hymba's FFN is one SwiGLU expert), got {self.num_experts}")
        if self.num_mamba != 1:
            fail(f"num_mamba must be 1, got {self.num_mamba}")
        if self.memory_tokens_interspersed_every:
            fail("memory_tokens_interspersed_every != 0 (interspersed meta tokens) is not supported")
        if self.mamba_proj_bias:
            fail("mamba_proj_bias=true is not supported (official Hymba has no in/out_proj bias)")
        if self.hidden_act != "silu" or self.mlp_hidden_act != "silu":
            fail(f"only silu activations are supported, got hidden_act={self.hidden_act!r}, "
                 f"mlp_hidden_act={self.mlp_hidden_act!r}")
        if not 0 < self.rms_norm_eps < 1:
            fail(f"rms_norm_eps must be in (0, 1), got {self.rms_norm_eps}")

        n = self.num_hidden_layers
        if len(set(self.global_attn_idx)) != len(self.global_attn_idx):
            fail(f"global_attn_idx names a layer twice: {self.global_attn_idx}")
        for i in self.global_attn_idx:
            if not 0 <= i < n:
                fail(f"global_attn_idx has layer {i}, outside 0..{n - 1}")
        seen: dict[int, int] = {}
        globals_ = set(self.global_attn_idx)
        for g, group in enumerate(self.kv_reuse_group):
            if len(group) < 2:
                fail(f"kv_reuse_group {group} needs a producer and at least one consumer")
            for i in group:
                if not 0 <= i < n:
                    fail(f"kv_reuse_group {group} has layer {i}, outside 0..{n - 1}")
                if i in seen:
                    fail(f"layer {i} appears in more than one place of kv_reuse_group "
                         f"(groups {seen[i]} and {g})")
                seen[i] = g
            producer, consumers = group[0], group[1:]
            for c in consumers:
                if c in globals_:
                    fail(f"layer {c} is a K/V consumer (group {group}) but also a global layer")
                if c <= producer:
                    fail(f"consumer layer {c} comes before its producer {producer} in {group}")
            if producer in globals_:
                fail(f"layer {producer} is global but produces K/V for {consumers}: global layers "
                     "never share K/V in Hymba")

        conv_dim = self.extra.get("conv_dim")
        if isinstance(conv_dim, dict):
            for k, v in conv_dim.items():
                if int(v) != self.d_inner:
                    fail(f"conv_dim[{k}] = {v} but the SSM width is {self.d_inner}")
        layer_type = self.extra.get("layer_type")
        if isinstance(layer_type, list) and any(t != "h" for t in layer_type):
            fail(f"only hybrid layers (layer_type 'h') are supported, got {sorted(set(layer_type))}")

    # ---- (de)serialisation -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HymbaConfig":
        """Build from the parsed contents of an HF config.json; unknown keys go to `extra`."""
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object")
        model_type = data.get("model_type")
        archs = data.get("architectures") or []
        if model_type != "hymba" and "HymbaForCausalLM" not in archs:
            raise ConfigError(f"not a Hymba config: model_type is {model_type!r} "
                              f"and architectures is {archs!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        if "conv_dim" in extra and isinstance(extra["conv_dim"], dict):
            # Spec P21: string keys in JSON, int keys at runtime. Normalise to int.
            extra["conv_dim"] = {int(k): int(v) for k, v in extra["conv_dim"].items()}
        try:
            return cls(**known, extra=extra)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid Hymba config: {e}") from e

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "HymbaConfig":
        """Read a config.json file (or the config.json inside a checkpoint folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"no config.json at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The HF config.json contents, with conv_dim/layer_type/v_head_dim filled as the official
        code serialises them."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data.update(self.extra)
        data["model_type"] = "hymba"
        data.setdefault("architectures", ["HymbaForCausalLM"])
        data["v_head_dim"] = self.v_dim
        data["conv_dim"] = {str(i): self.d_inner for i in range(self.num_hidden_layers)}
        data["layer_type"] = ["h"] * self.num_hidden_layers
        return dict(sorted(data.items()))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write folder/config.json atomically."""
        return atomic_write_text(Path(folder) / "config.json",
                                 json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes: Any) -> "HymbaConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _hymba_1_5b() -> HymbaConfig:
    """Values of nvidia/Hymba-1.5B-Base config.json (spec §1)."""
    groups = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [16, 17, 18],
              [19, 20], [21, 22], [23, 24], [25, 26], [27, 28], [29, 30]]
    return HymbaConfig(kv_reuse_group=groups, v_head_dim=128,
                       extra={"seq_length": 8192, "attn_implementation_new": "flex"})


def _tiny() -> HymbaConfig:
    """Same structure as Hymba-1.5B at toy scale: global first/middle/last layers, reuse groups
    of three and of two, GQA, meta tokens, a window shorter than typical prompts."""
    return HymbaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=16, global_attn_idx=[0, 4, 7],
        kv_reuse_group=[[1, 2, 3], [5, 6]], num_memory_tokens=8, mamba_d_state=8, mamba_dt_rank=4,
        max_position_embeddings=4096, orig_max_position_embeddings=1024, torch_dtype="float32",
    )


PRESETS = {"hymba-1.5b": _hymba_1_5b, "tiny": _tiny}


def preset(name: str) -> HymbaConfig:
    """A fresh HymbaConfig for a named preset."""
    if name not in PRESETS:
        raise ModelNotFoundError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()

