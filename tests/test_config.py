"""HymbaConfig: reading the official config.json, derived sizes, the layer plan, validation."""

import json

import pytest

from hymba_compile.config import GLOBAL, SLIDING, HymbaConfig, preset
from hymba_compile.errors import ConfigError, ModelNotFoundError
from tests.conftest import OFFICIAL_CONFIG_DIR, needs_official_config

CONSUMERS_1_5B = {2, 4, 6, 8, 10, 12, 14, 17, 18, 20, 22, 24, 26, 28, 30}


@needs_official_config
def test_official_config_derived_values():
    c = HymbaConfig.from_file(OFFICIAL_CONFIG_DIR / "config.json")
    assert (c.qk_head_dim, c.v_dim, c.d_inner, c.kv_groups) == (64, 128, 3200, 5)
    assert (c.in_proj_rows_owner, c.in_proj_rows_consumer) == (8960, 8000)
    assert c.rope_base == pytest.approx(74534.83, abs=0.01)  # spec §3.4: 10000 * 7^(32/31)
    assert c.extra["conv_dim"][0] == 3200  # string keys in the file, int keys here (P21)
    plan = c.layer_plan()
    assert {p.index for p in plan if p.attention == GLOBAL} == {0, 15, 31}
    assert {p.index for p in plan if p.is_consumer} == CONSUMERS_1_5B
    assert plan[17].kv_source == 16 and plan[18].kv_source == 16 and plan[2].kv_source == 1
    assert c.kv_cache_bytes_per_token() == 17 * 1920  # spec §4.1: 1,920 B per owning layer


@needs_official_config
def test_official_config_equals_preset():
    c = HymbaConfig.from_file(OFFICIAL_CONFIG_DIR)
    p = preset("hymba-1.5b")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "sliding_window", "global_attn_idx",
                 "kv_reuse_group", "num_memory_tokens", "mamba_d_state", "mamba_dt_rank",
                 "rope_base", "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(c, name) == getattr(p, name), name


@needs_official_config
def test_save_round_trip(tmp_path):
    c = HymbaConfig.from_file(OFFICIAL_CONFIG_DIR)
    c.save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["conv_dim"]["31"] == 3200 and data["v_head_dim"] == 128
    assert data == json.loads(json.dumps(c.to_dict()))
    assert HymbaConfig.from_file(tmp_path).to_dict() == c.to_dict()
    assert [f.name for f in tmp_path.iterdir()] == ["config.json"]  # no temp file left behind


def test_tiny_preset_has_the_real_structure():
    c = preset("tiny")
    plan = c.layer_plan()
    assert [p.attention for p in plan].count(GLOBAL) == 3
    assert {len(g) for g in c.kv_reuse_group} == {2, 3}
    assert c.num_key_value_heads < c.num_attention_heads and c.num_memory_tokens > 0
    assert all(p.attention == SLIDING for p in plan if p.is_consumer)


def test_unknown_preset():
    with pytest.raises(ModelNotFoundError, match="unknown preset 'nope'"):
        preset("nope")


def _base():
    return preset("tiny").to_dict()


@pytest.mark.parametrize("change, message", [
    ({"kv_reuse_group": [[1, 2, 4], [5, 6]]}, "consumer .* global|global .* consumer|also a global"),
    ({"kv_reuse_group": [[1, 2, 3], [3, 5]]}, "more than one place"),
    ({"kv_reuse_group": [[2, 1]]}, "before its producer"),
    ({"kv_reuse_group": [[1]]}, "needs a producer and at least one consumer"),
    ({"kv_reuse_group": [[1, 99]]}, "outside"),
    ({"num_attention_heads": 5}, "does not divide"),
    ({"num_key_value_heads": 3}, "does not divide num_attention_heads"),
    ({"global_attn_idx": [0, 0]}, "twice"),
    ({"hidden_size": -4}, "positive integer"),
    ({"num_experts": 2}, "num_experts"),
    ({"v_head_dim": 7}, "v_head_dim"),
    ({"rope_type": "yarn"}, "rope_type"),
    ({"conv_dim": {"0": 3}}, "conv_dim"),
])
def test_inconsistent_configs_are_rejected(change, message):
    data = _base()
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        HymbaConfig.from_dict(data)


def test_not_hymba_and_malformed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="not a Hymba config"):
        HymbaConfig.from_file(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        HymbaConfig.from_file(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        HymbaConfig.from_file(tmp_path)
    with pytest.raises(ConfigError, match="no config.json"):
        HymbaConfig.from_file(tmp_path / "missing")
    data = _base()
    data["hidden_size"] = "sixty-four"
    with pytest.raises(ConfigError):
        HymbaConfig.from_dict(data)
