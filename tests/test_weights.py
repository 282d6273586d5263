"""Checkpoint loading and saving under the official names; validation of names and shapes."""

import json

import pytest
import torch
from safetensors.torch import save_file

from hymba_compile.config import preset
from hymba_compile.errors import WeightsError
from hymba_compile.weights import (EMBED, LM_HEAD, load_parameters, parameter_count,
                                   parameter_shapes, random_parameters, save_parameters)
from tests.conftest import FIXTURE_DIR, needs_fixture


def test_shapes_of_the_1_5b_preset():
    c = preset("hymba-1.5b")
    shapes = parameter_shapes(c)
    assert len(shapes) == 611 and LM_HEAD not in shapes  # spec §2.2: 19 x 32 + 3, head tied
    assert parameter_count(c) == 1_522_797_824
    rows_8000 = {i for i in range(32) if shapes[f"model.layers.{i}.mamba.in_proj.weight"] == (8000, 1600)}
    assert rows_8000 == {2, 4, 6, 8, 10, 12, 14, 17, 18, 20, 22, 24, 26, 28, 30}
    assert shapes["model.layers.0.mamba.in_proj.weight"] == (8960, 1600)
    assert shapes["model.layers.5.mamba.x_proj.0.weight"] == (132, 3200)
    assert shapes["model.layers.5.mamba.A_log.0"] == (3200, 16)


@needs_fixture
def test_fixture_checkpoint_loads_and_casts():
    from hymba_compile.config import HymbaConfig

    c = HymbaConfig.from_file(FIXTURE_DIR)
    p32 = load_parameters(FIXTURE_DIR, c, torch.float32)
    assert list(p32) == list(parameter_shapes(c))
    p16 = load_parameters(FIXTURE_DIR, c, torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in p16.values())
    assert torch.equal(p16[EMBED], p32[EMBED].to(torch.bfloat16))


def test_round_trip_single_and_sharded(tmp_path):
    c = preset("tiny")
    params = random_parameters(c, seed=3)
    save_parameters(tmp_path / "single", c, params)
    assert sorted(f.name for f in (tmp_path / "single").iterdir()) == ["model.safetensors"]
    back = load_parameters(tmp_path / "single", c)
    assert all(torch.equal(back[n], params[n]) for n in params)

    # a two-shard checkpoint with an index, as the Instruct repo has
    names = list(params)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for file, part in halves.items():
        save_file({n: params[n] for n in part}, str(shard_dir / file))
        weight_map.update({n: file for n in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    back = load_parameters(shard_dir, c, torch.bfloat16)
    assert all(torch.equal(back[n], params[n].to(torch.bfloat16)) for n in params)


def test_stored_tied_head_is_accepted_and_ignored(tmp_path):
    c = preset("tiny")
    params = random_parameters(c)
    save_file({**params, LM_HEAD: params[EMBED].clone()}, str(tmp_path / "model.safetensors"))
    assert LM_HEAD not in load_parameters(tmp_path, c)


def test_every_problem_is_reported_at_once(tmp_path):
    c = preset("tiny")
    params = random_parameters(c)
    del params["model.layers.3.mamba.D.0"]
    del params["model.final_layernorm.weight"]
    params["model.layers.2.mamba.in_proj.weight"] = torch.zeros(7, 64)
    params["model.layers.9.extra.weight"] = torch.zeros(2)
    save_file(params, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError) as info:
        load_parameters(tmp_path, c)
    msg = str(info.value)
    assert "4 problems" in msg
    assert "missing model.layers.3.mamba.D.0 (expected shape [128])" in msg
    assert "missing model.final_layernorm.weight" in msg
    assert "mis-shaped model.layers.2.mamba.in_proj.weight: expected [320, 64], found [7, 64]" in msg
    assert "unexpected model.layers.9.extra.weight" in msg


def test_unreadable_or_absent_checkpoint(tmp_path):
    c = preset("tiny")
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_parameters(tmp_path, c)
    (tmp_path / "model.safetensors").write_bytes(b"garbage, not safetensors")
    with pytest.raises(WeightsError, match="cannot read"):
        load_parameters(tmp_path, c)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "nope.safetensors"}}))
    with pytest.raises(WeightsError, match="do not exist"):
        load_parameters(tmp_path, c)


def test_save_refuses_wrong_parameters_and_leaves_nothing(tmp_path):
    c = preset("tiny")
    params = random_parameters(c)
    params[EMBED] = torch.zeros(3, 3)
    with pytest.raises(WeightsError, match="mis-shaped model.embed_tokens.weight"):
        save_parameters(tmp_path / "out", c, params)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_1_5b_preset_random_bf16_builds():
    """Builds the full-size model in bf16 (3 GB) and checks the parameter count (spec §2.2)."""
    c = preset("hymba-1.5b")
    params = random_parameters(c, dtype=torch.bfloat16)
    assert sum(t.numel() for t in params.values()) == 1_522_797_824
    rows_8000 = {i for i in range(32) if params[f"model.layers.{i}.mamba.in_proj.weight"].shape[0] == 8000}
    assert rows_8000 == {2, 4, 6, 8, 10, 12, 14, 17, 18, 20, 22, 24, 26, 28, 30}
    assert all(t.dtype == torch.bfloat16 for t in params.values())
