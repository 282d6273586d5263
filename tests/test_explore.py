"""`explore`: the points of a family's space, verification before ranking, the per-target
choices that compile/load then build with, the library variant, and fusion variants."""

import json

import pytest
import torch

from hymba_compile import load
from hymba_compile.artifacts import ensure_compiled, read_manifest
from hymba_compile.bench.kernels import KernelCase, Prepared
from hymba_compile.choices import LIBRARY, TUNED, Choice, choices_path, read_choices, tuned_dir
from hymba_compile.config import preset
from hymba_compile.cuda_compile import find_nvcc
from hymba_compile.errors import HymbaError
from hymba_compile.explore import choose
from hymba_compile.explore.kernels import run_point
from hymba_compile.explore.model import fusion_points, parity
from hymba_compile.explore.space import points
from hymba_compile.program import program_kernels
from hymba_compile.program_spec import ProgramSpec
from hymba_compile.ir.linear import gemv
from hymba_compile.schedules import named_target
from hymba_compile.schedules.registry import schedule
from hymba_compile.schedules.target import host_mcpu
from tests.conftest import run_cli
from tests.kernels.helpers import needs_pocl

CPU = named_target("cpu")


def assert_generates_like_eager(cache) -> None:
    """The tiny preset compiled into `cache` (with its recorded choices) generates the eager
    reference's greedy tokens."""
    ids = torch.tensor([[1, 5, 9, 200, 17]])
    want = load("tiny", backend="eager", dtype="float32").generate(ids, 6, do_sample=False)
    got = load("tiny", dtype="float32", cache_dir=cache, decode_batches=(1,),
               progress=False).generate(ids, 6, do_sample=False)
    assert torch.equal(got, want)


def test_points_start_with_the_default_and_never_repeat_it():
    pts = points("matmul", CPU, "cpu")
    assert pts[0] == Choice() and len(set(pts)) == len(pts)
    # the default rule (bf16dot: mr, nr, nb grid 4 x 3 x 2) minus its own defaults (3, 4, 64),
    # the tiles grid (3 x 2 x 2) whole (not the default rule), plus the library
    assert len(pts) == 1 + 23 + 12 + 1 and Choice.of(LIBRARY) in pts
    assert Choice.of("bf16dot", {"mr": 3, "nr": 4, "nb": 64}) not in pts
    assert Choice.of("tiles") in pts  # its own defaults (6, 4, 8): no knobs
    attention = points("attention_prefill", CPU, "cpu")
    assert Choice.of("flash", None, {"block_q": 32}) in attention  # builder knobs too
    assert not any(c.variant == LIBRARY for c in attention)  # only GEMM families have one


def test_a_knob_outside_the_rules_grid_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"no knobs \['tile_m'\]"):
        schedule(gemv(1, 64, 64, "float32"), CPU, "rows", {"tile_m": 4})
    mod, used = schedule(gemv(1, 64, 64, "float32"), CPU, "rows", {"rows": 2, "lanes": 16})
    assert used == "rows"


def _case(ours, baseline):
    return KernelCase("fake", "4 float32", "torch", lambda: Prepared(ours=ours, baseline=baseline))


def test_a_wrong_or_failing_point_is_reported_and_never_timed():
    reference = torch.ones(4)
    wrong = run_point(_case(lambda: torch.ones(4) * 1.01, lambda: reference), "gemv",
                      Choice.of("rows"), reference, repeat=1)
    assert wrong["status"] == "wrong" and "ms" not in wrong and "tolerance" in wrong["error"]

    def boom():
        raise RuntimeError("does not lower")
    failed = run_point(KernelCase("fake", "", "", boom), "gemv", Choice.of("rows"), reference, 1)
    assert failed["status"] == "failed" and "does not lower" in failed["error"]
    right = run_point(_case(lambda: reference + 1e-6, lambda: reference), "gemv",
                      Choice.of("rows"), reference, repeat=1)
    assert right["status"] == "ok" and right["ms"] > 0


def test_the_choice_must_win_on_every_case_of_its_family():
    def row(case, choice, gain, status="ok"):
        return {"case": case, "shape": "", "family": "gemv", **choice.to_json(),
                "status": status, "vs_default": gain if status == "ok" else None}
    a, b = Choice.of("rows", {"rows": 2}), Choice.of("rows2")
    rows = [row("x", a, 1.5), row("y", a, 1.4), row("x", b, 3.0), row("y", b, None, "wrong"),
            row("x", Choice.of("dlight"), 1.02), row("y", Choice.of("dlight"), 1.03)]
    best = choose.best_per_family(rows)
    assert best["gemv"]["choice"] == a  # b is faster on x but wrong on y; dlight is noise
    assert best["gemv"]["speedup"] == pytest.approx((1.5 * 1.4) ** 0.5, abs=1e-3)
    assert choose.best_per_family([row("x", b, 1.01)]) == {}  # noise, not a gain
    uneven = [row("x", a, 1.3), row("y", a, 0.9)]  # mean 1.08, but slower on y
    assert choose.best_per_family(uneven) == {}


def test_a_kernel_gets_its_own_choice_where_its_family_has_none():
    """Per kernel (symbol, one shape): a point that wins on the cases of that kernel is chosen
    for it even when it loses on another kernel of the family; builder-knob points never are
    (they change the kernel and its symbol)."""
    def row(case, symbols, choice, gain):
        return {"case": case, "shape": "", "family": "gemv", "symbols": symbols,
                **choice.to_json(), "status": "ok", "vs_default": gain}
    a, b = Choice.of("rows", {"rows": 4}), Choice.of("rows", {"lanes": 16})
    rows = [row("x", ["gemv_k1"], a, 1.6), row("y", ["gemv_k2"], a, 0.8),
            row("x", ["gemv_k1"], b, 1.1), row("y", ["gemv_k2"], b, 1.2)]
    best = choose.best_per_family(rows)
    assert best["gemv"]["choice"] == b  # the family: b (no slower anywhere)
    assert best["gemv_k1"]["choice"] == a and best["gemv_k1"]["family"] == "gemv"
    assert "gemv_k2" not in best  # b is already the family's choice


def test_kernel_scope_end_to_end_writes_report_and_choices(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, stdout, err = run_cli(capsys, "explore", "--kernels", "gemv", "--cases", "gemv_x_proj",
                                "--repeat", "3", "--out", str(out), "--cache-dir", str(cache))
    assert code == 0, err
    record = json.loads((out / "explore.json").read_text())
    rows = record["rows"]
    assert rows[0]["choice"] == "default" and len(rows) == len(points("gemv", CPU, "cpu"))
    assert all(r["status"] == "ok" and r["max_abs_err"] <= r["tolerance"] for r in rows)
    assert all(r["baseline_ms"] > 0 and r["ms"] > 0 for r in rows)
    for name in ("explore.csv", "variants.png", "pareto.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "variants.png").read_bytes()[:4] == b"\x89PNG"
    # one gemv case of nine: what it found is reported, not recorded as the family's choice
    recorded = json.loads(choices_path(cache, "cpu", host_mcpu()).read_text())
    assert recorded["target"] == "cpu" and recorded["mcpu"] == host_mcpu()
    assert "gemv" not in recorded["families"] and "not recorded" in stdout
    assert "gemv_x_proj" in stdout


def test_a_narrow_run_keeps_the_recorded_choices_of_other_families(tmp_path, capsys):
    path = choices_path(tmp_path, "cpu", host_mcpu())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"target": "cpu", "families": {
        "rmsnorm": {"variant": "rows_serial"}, "gemv": {"variant": "rows2"}}}))
    code, _, err = run_cli(capsys, "explore", "--kernels", "gemv", "--cases", "gemv_x_proj",
                           "--repeat", "1", "--out", str(tmp_path / "out"), "--cache-dir",
                           str(tmp_path))
    assert code == 0, err
    assert {f: c.variant for f, c in read_choices(path).items()} == {
        "rmsnorm": "rows_serial", "gemv": "rows2"}


@pytest.mark.parametrize("argv, message", [
    (["--kernels", "gemvv"], "unknown kernel family gemvv; known:"),
    (["--scope", "model", "--target", "cuda:sm_90"], "needs its GPU"),
    (["--scope", "model", "--variants", "nope"], "no fusion variant matches"),
    (["--repeat", "0"], "--repeat must be at least 1"),
    (["--target", "bogus"], "unknown target 'bogus'"),
    (["--kernels", "gemv", "--variants", "tiless"], "unknown schedule variant tiless"),
    (["--target", "cpu:bogusmcpu"], "cannot be measured here"),
    (["--scope", "model", "--model", "/no/such/model"], "/no/such/model"),
])
def test_bad_explore_input_exits_2(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "explore", "--out", str(tmp_path), "--cache-dir",
                           str(tmp_path), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_recorded_choices_build_the_program_library_included(tmp_path):
    """A choices file (as explore writes it) naming the library variant for the prefill GEMMs and
    a builder knob: compile picks it up, the manifest records it, generation equals eager."""
    path = choices_path(tmp_path, "cpu", host_mcpu())
    path.parent.mkdir(parents=True)
    choice = {"matmul": {"variant": LIBRARY}, "gate_up_matmul": {"variant": LIBRARY},
              "attention_prefill": {"variant": "flash", "builder_knobs": {"block_q": 32}}}
    path.write_text(json.dumps({"target": "cpu", "families": choice}))
    spec = ProgramSpec(preset("tiny"), "float32", (1,))
    artifact = ensure_compiled(spec, "cpu", tmp_path, progress=False)
    manifest = read_manifest(artifact.path)
    assert [f for f, _ in manifest["choices"]] == sorted(choice)
    variants = {k["family"]: k["variant"] for k in manifest["kernels"].values()}
    assert variants["matmul"] == variants["gate_up_matmul"] == LIBRARY
    assert variants["attention_prefill"] == "flash block_q=32"
    assert ensure_compiled(spec, "cpu", tmp_path, variants={}, progress=False).key != artifact.key
    assert_generates_like_eager(tmp_path)


def test_a_choice_that_does_not_fit_a_kernel_falls_back_to_the_default(tmp_path):
    """Choices are measured at Hymba-1.5B sizes and apply to every model: a variant that does
    not apply (here a CUDA rule named for the CPU) builds the default, saying so."""
    path = choices_path(tmp_path, "cpu", host_mcpu())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"target": "cpu", "families": {"gemv": {"variant": "warp_rows"}}}))
    spec = ProgramSpec(preset("tiny"), "float32", (1,))
    manifest = read_manifest(ensure_compiled(spec, "cpu", tmp_path, progress=False).path)
    gemvs = {k["variant"] for k in manifest["kernels"].values() if k["family"] == "gemv"}
    assert gemvs == {"rows (warp_rows does not apply)"}


def test_a_corrupt_choices_file_is_one_clear_error(tmp_path, capsys):
    path = choices_path(tmp_path, "cpu", host_mcpu())
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(HymbaError, match="choices file .* is unreadable"):
        read_choices(path)
    code, _, err = run_cli(capsys, "compile", "--model", "tiny", "--decode-batches", "1", "-o",
                           str(tmp_path))
    assert code == 2 and "unreadable" in err


def test_fusion_variants_are_validated_and_listed():
    with pytest.raises(ValueError, match="unknown fusion variant combine=half"):
        ProgramSpec(preset("tiny"), "float32", (1,), (("combine", "half"),))
    default = ProgramSpec(preset("tiny"), "float32", (1,))
    same = ProgramSpec(preset("tiny"), "float32", (1,), (("combine", "fused"),))
    assert same.fusions == () and same.digest() == default.digest()
    labels = [p for p in fusion_points(None, "cpu")]
    assert labels[0] == {} and {"combine": "unfused"} in labels and {"rope_cache": "fused"} in labels
    assert {"scan": "sequential"} not in labels  # what the CPU uses anyway


def test_fusion_variants_program_matches_eager(tmp_path):
    """combine and gate_up unfused (norm_average + GEMV, two GEMVs/GEMMs + silu_mul) and RoPE
    fused with the cache write, in one program: logits and greedy tokens against the eager
    reference on the tiny preset."""
    row = parity({"combine": "unfused", "gate_up": "unfused", "rope_cache": "fused"}, "cpu",
                 str(tmp_path))
    assert row["status"] == "ok", row
    assert row["greedy_equal"] and row["parity_max_abs"] <= 1e-3 * row["parity_scale"]


@needs_pocl
@pytest.mark.skipif(find_nvcc() is None, reason="ptxas resources need nvcc (CUDA toolkit)")
def test_cuda_kernel_scope_builds_checks_on_pocl_and_reports_resources(tmp_path, capsys):
    """Without a GPU: every gemv point for sm_90 built, checked on pocl, with ptxas resources;
    a point whose knob does not fit the shape fails with the reason; nothing recorded."""
    code, stdout, err = run_cli(capsys, "explore", "--target", "cuda:sm_90", "--kernels", "gemv",
                                "--cases", "gemv_x_proj", "--out", str(tmp_path / "out"),
                                "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    rows = json.loads((tmp_path / "out" / "explore.json").read_text())["rows"]
    by_choice = {r["choice"]: r for r in rows}
    assert by_choice["default"]["status"] == "built"
    assert "8 warps per block do not divide 132" in by_choice["warp_rows rows=8"]["error"]
    for r in rows:
        assert r["ms"] is None and r["timing"] == "needs a device"
        if r["status"] == "built":
            assert r["pocl_err"] <= r["tolerance"] and r["registers"] > 0
            assert r["spill_bytes"] == 0
    assert not (tmp_path / "cache" / "choices").exists()


@pytest.mark.slow
def test_recorded_tuned_choice_builds_tuned_kernels(tmp_path):
    """`tune` the tiny program's decode GEMVs into the cache's database, record "tuned" as the
    gemv choice: the program takes the database's schedule for every GEMV it has a record of
    (all of them: decode sizes are static), and generates what eager does."""
    from hymba_compile.tune import tune

    summary = tune("tiny", "cpu", ["gemv"], trials=4, out=tuned_dir(tmp_path, "cpu", host_mcpu()),
                   dtype="float32", decode_batches=(1,), echo=lambda _: None)
    assert summary["kernels"] and all(r.get("ok") for r in summary["kernels"])
    path = choices_path(tmp_path, "cpu", host_mcpu())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"target": "cpu", "families": {"gemv": {"variant": TUNED}}}))
    spec = ProgramSpec(preset("tiny"), "float32", (1,))
    manifest = read_manifest(ensure_compiled(spec, "cpu", tmp_path, progress=False).path)
    gemvs = [k["variant"] for k in manifest["kernels"].values() if k["family"] == "gemv"]
    assert gemvs and set(gemvs) == {TUNED}
    assert_generates_like_eager(tmp_path)


def test_a_kernel_choice_overrides_its_familys(tmp_path):
    spec = ProgramSpec(preset("tiny"), "float32", (1,))
    gemvs = sorted(str(f.attrs["global_symbol"]) for f in program_kernels(spec, CPU)
                   if str(f.attrs["hymba.kernel"]) == "gemv")
    path = choices_path(tmp_path, "cpu", host_mcpu())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"target": "cpu", "families": {
        "gemv": {"variant": "rows2"},
        gemvs[0]: {"variant": "rows", "rule_knobs": {"lanes": 16}, "family": "gemv"}}}))
    manifest = read_manifest(ensure_compiled(spec, "cpu", tmp_path, progress=False).path)
    labels = {name: k["variant"] for name, k in manifest["kernels"].items()
              if k["family"] == "gemv"}
    assert labels.pop(gemvs[0].replace(".", "_")) == "rows lanes=16"
    assert labels and set(labels.values()) == {"rows2"}
