"""`python -m hymba_compile`: generate and info end to end; every bad input exits 2 with one line."""

import json
import subprocess
import sys

import pytest
import torch

from hymba_compile.config import preset
from hymba_compile.weights import random_parameters, save_parameters
from tests.conftest import OFFICIAL_CONFIG_DIR, needs_official_config, run_cli


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny model whose vocabulary fits the official Llama-2 tokenizer (32001)."""
    folder = tmp_path_factory.mktemp("ckpt")
    config = preset("tiny").replace(vocab_size=32001)
    config.save(folder)
    save_parameters(folder, config, random_parameters(config, seed=11))
    return folder


def test_python_dash_m_generate_default():
    """The README's first command path: a subprocess on the embedded default model."""
    proc = subprocess.run([sys.executable, "-m", "hymba_compile", "generate", "--max-new-tokens", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "generated 5 tokens" in lines[-1] and "tokens/s" in lines[-1]
    assert "demo_model" in lines[-1] and len(lines) >= 2  # streamed text, then the summary


def test_sampling_is_the_default_and_seeded(capsys):
    runs = [run_cli(capsys, "generate", "--model", "tiny", "--prompt", "1 5 9", "--max-new-tokens", "12",
                    *extra)[1].splitlines()[0] for extra in ([], [], ["--seed", "1"], ["--greedy"])]
    assert runs[0] == runs[1]  # seed 0 by default: reproducible
    assert runs[0] != runs[2] and runs[0] != runs[3]


def test_generate_ids_without_tokenizer(capsys):
    code, out, err = run_cli(capsys, "generate", "--model", "tiny", "--prompt", "1 5 9",
                             "--max-new-tokens", "4")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("1 5 9 |") and len(first.split("|")[1].split()) == 4


@needs_official_config
def test_generate_streams_text_that_matches_the_ids(capsys, tiny_checkpoint):
    import hymba_compile
    from hymba_compile.tokenizer import HymbaTokenizer

    code, out, err = run_cli(capsys, "generate", "--model", str(tiny_checkpoint), "--tokenizer",
                             str(OFFICIAL_CONFIG_DIR), "--prompt", "Hello world", "--max-new-tokens", "6",
                             "--greedy")
    assert code == 0, err
    tok = HymbaTokenizer.from_folder(OFFICIAL_CONFIG_DIR)
    model = hymba_compile.load(tiny_checkpoint, tokenizer=OFFICIAL_CONFIG_DIR)
    ids = model.generate([tok.encode("Hello world")], 6)[0].tolist()
    text, summary = out.rstrip("\n").rsplit("\n", 1)
    assert text == tok.decode(ids)
    assert "prompt 3 tokens, generated 6 tokens" in summary


@needs_official_config
def test_chat_prompt_has_no_bos(capsys, tiny_checkpoint):
    code, out, err = run_cli(capsys, "generate", "--model", str(tiny_checkpoint), "--tokenizer",
                             str(OFFICIAL_CONFIG_DIR), "--prompt", "Hi", "--chat", "--max-new-tokens", "2")
    assert code == 0, err
    assert out.startswith("<extra_id_0>System\n\n<extra_id_1>User\nHi\n<extra_id_1>Assistant\n")


def test_info_preset(capsys):
    code, out, err = run_cli(capsys, "info", "--model", "hymba-1.5b")
    assert code == 0, err
    assert "parameters: 1,522,797,824" in out
    assert "32,640 bytes per token in bf16 (17 owning layers x 1,920)" in out
    assert "   17  sliding  reads K/V of layer 16" in out


def _bad_checkpoint(tmp_path, kind):
    config = preset("tiny")
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "not-hymba":
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    elif kind == "malformed":
        (folder / "config.json").write_text("{oops")
    elif kind == "misshaped":
        config.save(folder)
        params = random_parameters(config)
        params["model.memory_tokens"] = torch.zeros(3, 64)
        save_parameters(folder, config.replace(num_memory_tokens=3), params)
    elif kind == "no-weights":
        config.save(folder)
    return str(folder)


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "/definitely/not/here"], "neither a checkpoint folder nor a preset"),
    (["generate", "--model", "no-such-preset"], "neither a checkpoint folder nor a preset"),
    (["generate", "--model", "@not-hymba"], "not a Hymba config"),
    (["generate", "--model", "@malformed"], "not valid JSON"),
    (["generate", "--model", "@misshaped"], "mis-shaped model.memory_tokens: expected [8, 64], found [3, 64]"),
    (["generate", "--model", "@no-weights"], "no model.safetensors"),
    (["generate", "--prompt", ""], "prompt is empty"),
    (["generate", "--model", "tiny", "--prompt", "hello"], "no tokenizer"),
    (["generate", "--model", "tiny", "--prompt", " ".join(["1"] * 4097)], "over the context limit"),
    (["generate", "--max-new-tokens", "-3"], "non-negative integer"),
    (["generate", "--max-new-tokens", "5000"], "exceeds the context limit"),
    (["generate", "--temperature", "-1"], "temperature"),
    (["generate", "--top-k", "0"], "top_k"),
    (["generate", "--top-p", "1.5"], "top_p"),
    (["generate", "--dtype", "float16"], "invalid choice"),
    (["generate", "--model", "tiny", "--chat"], "--chat needs a tokenizer"),
    (["info", "--model", "@not-hymba"], "not a Hymba config"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, message):
    argv = [_bad_checkpoint(tmp_path, a[1:]) if a.startswith("@") else a for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_bad_input_in_a_subprocess_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "hymba_compile", "generate", "--model", "/nope"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
