"""`python -m hymba_compile bench kernels --target cuda:sm_90 --dry`: the table and JSON rows on a
small selection (seconds), and the work-per-call functions every bench case carries."""

import json

import pytest

from hymba_compile import cuda_compile as cc
from hymba_compile.__main__ import main
from hymba_compile.bench.kernel_cases.attention import visible_pairs
from hymba_compile.bench.kernels import all_cases
from hymba_compile.pocl import pocl_unavailable_reason


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_rmsnorm(tmp_path, capsys):
    out = tmp_path / "cuda-kernels.json"
    code, text, err = run_cli(capsys, "bench", "kernels", "--target", "cuda:sm_90", "--dry",
                              "--only", "rmsnorm", "--out", str(out))
    assert code == 0, err
    rows = json.loads(out.read_text())
    assert {r["name"] for r in rows} == {"rmsnorm", "add_rmsnorm"}
    assert "skipped rmsnorm 1x1600 bfloat16 [rows_serial]" in text  # a CPU-only variant
    assert "H200 floor us" in text and str(out) in text
    for r in rows:
        assert r["arch"] == "sm_90" and r["launches"] >= 1 and not r["errors"]
        assert r["family"] == r["name"] and r["variant"]
        assert r["bytes_moved"] > 0 and r["flops"] > 0 and r["floor_us"] > 0
        if cc.find_nvcc() is not None:
            assert r["registers"] > 0 and r["spill_bytes"] == 0 and r["stack_bytes"] == 0
        if pocl_unavailable_reason() is None:
            tol = 1e-5 if "float32" in r["shape"] else 2 ** -5  # bf16: one ulp at |y| < 4
            assert r["pocl_max_abs_err"] <= tol, r
    big = next(r for r in rows if r["name"] == "rmsnorm" and r["shape"] == "1152x1600 float32")
    assert big["bytes_moved"] == (2 * 1152 * 1600 + 1600) * 4
    assert big["flops"] == 4 * 1152 * 1600
    assert big["floor_us"] == pytest.approx(big["bytes_moved"] / 4.3e12 * 1e6, rel=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--dry"], "--dry is for CUDA targets"),
    (["--target", "cuda:sm_90"], "needs a GPU runner"),
    (["--target", "cuda:sm_1x", "--dry"], "unknown target"),
    (["--target", "cpu:znver4"], "runs on this machine's CPU"),
])
def test_dry_run_refusals(capsys, argv, message):
    code, _, err = run_cli(capsys, "bench", "kernels", *argv)
    assert code == 2 and message in err


def test_every_case_has_kernels_and_work():
    for case in all_cases():
        assert case.kernels, case.name
        assert case.bytes_moved() > 0 and case.flops() >= 0, case.name


def test_visible_pairs():
    def brute(length, window, meta):
        return sum(1 for i in range(length) for j in range(i + 1)
                   if window is None or i - j <= window or j < meta)
    for length, window, meta in [(7, None, 0), (40, 8, 4), (50, 3, 10), (9, 20, 2)]:
        assert visible_pairs(length, window, meta) == brute(length, window, meta)
