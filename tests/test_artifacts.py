"""The compiled-program cache: keys, verification, atomic writes, rebuilds, the compile CLI."""

import json
import shutil

import pytest

from hymba_compile import artifacts
from hymba_compile.__main__ import main
from hymba_compile.config import preset
from hymba_compile.program_spec import ProgramSpec

SPEC = ProgramSpec(preset("tiny"), "float32", (1,))


def test_key_depends_on_what_determines_the_program():
    key = artifacts.artifact_key(SPEC, "cpu")
    assert key == artifacts.artifact_key(ProgramSpec(preset("tiny"), "float32", (1,)), "cpu")
    others = [ProgramSpec(preset("tiny"), "bfloat16", (1,)), ProgramSpec(preset("tiny"), "float32", (1, 2)),
              ProgramSpec(preset("tiny").replace(sliding_window=8), "float32", (1,))]
    assert len({key, *(artifacts.artifact_key(s, "cpu") for s in others)}) == 4
    assert artifacts.artifact_key(SPEC, "cpu:skylake-avx512") != key
    assert artifacts.artifact_key(SPEC, "cpu", {"gemv": "rows2"}) != key


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return root, artifacts.ensure_compiled(SPEC, "cpu", root, progress=False)


def test_compiled_once_then_loaded(built):
    root, first = built
    assert first.built_now and first.library.is_file()
    again = artifacts.ensure_compiled(SPEC, "cpu", root, progress=False)
    assert not again.built_now and again.path == first.path
    manifest = json.loads((first.path / artifacts.MANIFEST).read_text())
    assert manifest["key"] == first.key and manifest["kernels"]
    assert [p.name for p in root.iterdir()] == [first.key]  # no staging folder left behind


def _damage(entry, how: str) -> None:
    lib, manifest = entry / artifacts.LIBRARY, entry / artifacts.MANIFEST
    if how == "flip a byte":
        data = bytearray(lib.read_bytes())
        data[len(data) // 2] ^= 0xFF
        lib.write_bytes(bytes(data))
    elif how == "truncate":
        lib.write_bytes(lib.read_bytes()[:1000])
    elif how == "delete manifest":
        manifest.unlink()
    else:  # a manifest written for another key
        m = json.loads(manifest.read_text())
        m["key"] = "0" * 32
        manifest.write_text(json.dumps(m))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete manifest", "other key"])
def test_corrupt_or_stale_entry_is_detected(built, damage, tmp_path):
    _, first = built
    copy = tmp_path / first.key
    shutil.copytree(first.path, copy)
    assert artifacts.verify(copy, first.key) is None
    _damage(copy, damage)
    assert artifacts.verify(copy, first.key) is not None


def test_corrupt_entry_is_rebuilt_never_loaded(built, capsys):
    root, first = built
    _damage(first.path, "flip a byte")
    rebuilt = artifacts.ensure_compiled(SPEC, "cpu", root, progress=True)
    assert rebuilt.built_now and artifacts.verify(rebuilt.path, rebuilt.key) is None
    assert "unusable (library does not match its recorded checksum)" in capsys.readouterr().err


def test_failed_compile_leaves_nothing_under_the_key(tmp_path, monkeypatch):
    """A failure after the library was written to the staging folder (here: checksumming it)
    removes the staging folder; nothing appears under the key."""
    def broken(path):
        assert path.is_file()  # the library is on disk, in the staging folder
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "_sha256", broken)
    with pytest.raises(OSError, match="disk full"):
        artifacts.ensure_compiled(SPEC, "cpu", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_compile_cli_builds_then_reports_cached(tmp_path, capsys):
    args = ["compile", "--model", "tiny", "--dtype", "float32", "--decode-batches", "1", "-o", str(tmp_path)]
    assert main(args) == 0
    assert "compiled in" in capsys.readouterr().out
    assert main(args) == 0
    assert "already cached" in capsys.readouterr().out


def test_compile_cli_rejects_bad_targets_with_the_reason(capsys):
    assert main(["compile", "--model", "tiny", "--target", "cuda:sm_7"]) == 2
    assert "architectures before sm_75 are not supported" in capsys.readouterr().err
    assert main(["compile", "--model", "tiny", "--target", "cpu,tpu:v5"]) == 2
    assert "unknown target 'tpu:v5'" in capsys.readouterr().err
