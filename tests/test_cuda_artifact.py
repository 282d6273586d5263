"""The GPU program per architecture, built here without a GPU: `compile --target cuda:sm_XX`
gives an executable whose device code is an nvcc fatbin for that arch (not CUDA source to JIT
at load), and a manifest with the program's launches and each kernel's ptxas resources;
`info --artifact` prints it; asking for CUDA without a GPU is one clear error."""

from __future__ import annotations

import json

import pytest

from hymba_compile import artifacts
from hymba_compile import cuda_compile as cc
from hymba_compile.__main__ import main
from hymba_compile.cuda_export import device_code
from tests.test_cuda_compile import needs_nvcc

pytestmark = needs_nvcc


@pytest.fixture(scope="module")
def sm90(tmp_path_factory):
    """tiny fp32, decode batches 1 and 4, compiled for sm_90 through the CLI (~15 s)."""
    root = tmp_path_factory.mktemp("cuda-cache")
    assert main(["compile", "--model", "tiny", "--dtype", "float32", "--target", "cuda:sm_90",
                 "--decode-batches", "1,4", "-o", str(root)]) == 0
    (entry,) = [p for p in root.iterdir()]
    return entry, json.loads((entry / artifacts.MANIFEST).read_text())


def test_library_holds_an_sm90_fatbin_of_every_kernel(sm90):
    entry, manifest = sm90
    (fmt, code), = device_code(entry / artifacts.LIBRARY)
    assert fmt == "fatbin"  # not "cuda": nothing to JIT when it is loaded
    assert cc.fatbin_entries(code) == [("sass", 90), ("ptx", 90)]
    names = {d["name"] for k in manifest["kernels"].values() for d in k.get("device_kernels", [])}
    assert names and all(name.encode() in code for name in names)
    assert manifest["fatbin_entries"] == ["sass_90", "ptx_90"]


def test_manifest_records_arch_launches_and_resources(sm90):
    _, m = sm90
    assert (m["target_name"], m["arch"], m["kind"], m["cuda_graph"]) == \
        ("cuda:sm_90", "sm_90", "cuda", True)
    assert m["decode_batches"] == [1, 4] and {"decode_b1", "decode_b4", "prefill"} <= set(m["functions"])
    assert m["nvcc"] and m["tvm"] and m["spec_digest"] and m["source_digest"]
    ours = {s: k for s, k in m["kernels"].items() if k["family"] != "glue"}
    for symbol, k in ours.items():
        assert k["variant"] and k["device_kernels"], symbol
        for d in k["device_kernels"]:
            assert d["registers"] > 0 and d["spill_store_bytes"] == d["spill_load_bytes"] == 0, d
    step = m["launches"]["decode_b1"]
    # every decode kernel reads only its (static) arguments and the step's own buffers: the
    # step is one CUDA graph except the launch that writes the returned logits
    assert step["launches"] >= step["kernels"] > 0
    assert step["in_graph"] >= step["launches"] - 2
    assert m["decode_launches_per_layer"]["decode_b1"] == round(step["launches"] / 8, 2)


def test_no_cuda_graph_build_captures_nothing(tmp_path):
    assert main(["compile", "--model", "tiny", "--dtype", "float32", "--target", "cuda:sm_90",
                 "--decode-batches", "1", "--no-cuda-graph", "-o", str(tmp_path)]) == 0
    (entry,) = list(tmp_path.iterdir())
    m = json.loads((entry / artifacts.MANIFEST).read_text())
    assert m["cuda_graph"] is False and m["launches"]["decode_b1"]["in_graph"] == 0


def test_info_artifact_prints_the_manifest(sm90, capsys):
    entry, m = sm90
    assert main(["info", "--artifact", str(entry.parent)]) == 0
    out = capsys.readouterr().out
    assert "target cuda:sm_90 (arch sm_90, CUDA graph on" in out and "intact" in out
    assert "decode_b4" in out and "launches / layer" in out
    assert "attention_decode" in out and "split_lanes" in out
    assert main(["info", "--artifact", str(entry.parent / "nothing-here")]) == 2
    assert "holds no compiled program" in capsys.readouterr().err


def test_cuda_device_without_a_gpu_is_one_clear_error(sm90, capsys):
    entry, _ = sm90
    assert main(["generate", "--model", "tiny", "--device", "cuda", "--cache-dir",
                 str(entry.parent), "--max-new-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda': torch sees no CUDA GPU") and err.count("\n") == 1


def test_an_nvcc_error_names_the_kernel_and_arch(monkeypatch):
    """A kernel nvcc rejects is named with the arch and nvcc's message (here a planted error in
    one kernel of an otherwise valid two-kernel source)."""
    from hymba_compile import cuda_export

    source = ('extern "C" __global__ void __launch_bounds__(32) good_kernel(float* a) {\n'
              '  a[threadIdx.x] = 1.0f;\n}\n'
              'extern "C" __global__ void __launch_bounds__(32) bad_kernel(float* a) {\n'
              '  a[threadIdx.x] = undeclared_name;\n}\n')
    with pytest.raises(cc.CudaCompileError) as info:
        cc.compile_with_resources(source, ["sm_90"])
    assert cuda_export.failing_kernels(source, str(info.value)) == ["bad_kernel"]


def test_target_lists_and_cuda_all():
    from hymba_compile.errors import HymbaError
    from hymba_compile.targets import parse_targets

    assert parse_targets("cuda:all") == [f"cuda:{a}" for a in cc.supported_archs()]
    assert "cuda:sm_90" in parse_targets("cuda:all")
    assert parse_targets("cpu, cuda:sm_90,cuda:sm_90") == ["cpu", "cuda:sm_90"]
    with pytest.raises(HymbaError, match="unknown target"):
        parse_targets("cuda:sm90")


def test_no_nvcc_is_one_error_listing_the_programs_there(sm90, monkeypatch, capsys):
    """No toolchain to build the sm_80 program: the error says why and which programs the cache
    holds (the sm_90 one)."""
    entry, _ = sm90
    monkeypatch.setattr(cc, "find_nvcc", lambda: None)
    assert main(["compile", "--model", "tiny", "--dtype", "float32", "--target", "cuda:sm_80",
                 "--decode-batches", "1,4", "-o", str(entry.parent)]) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after the bar
    assert err.startswith("error: cannot compile the cuda:sm_80 program: sm_80: nvcc not found")
    assert err.endswith(f"programs in {entry.parent}: cuda:sm_90 (float32, batches [1, 4])")
    assert len(list(entry.parent.iterdir())) == 1  # nothing half-written
