"""The device check's script (`hymba_compile.bench.gpu_check`) run end to end on the CPU with the
tiny preset (`--all-sections --model tiny`), so a GPU session never spends device time on a
broken script: every section runs, the fixture parity holds, the JSON is complete. Slow (~1 min:
it compiles the tiny programs into a bundle folder of its own)."""

from __future__ import annotations

import json
import shutil

import pytest

from hymba_compile.bench import gpu_check
from tests.conftest import FIXTURE_DIR, needs_fixture

pytestmark = [pytest.mark.slow, needs_fixture]


def test_every_section_runs_on_the_cpu(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURE_DIR, bundle / "fixtures" / "official-tiny")
    out = tmp_path / "check.json"
    status = gpu_check.main(["--bundle", str(bundle), "--device", "cpu", "--model", "tiny",
                             "--all-sections", "--repeat", "1", "--json", str(out)])
    results = json.loads(out.read_text())
    assert results["failed"] == [] and status == 0
    for section in ("bound", "fixture", "model", "decode", "prefill", "launches", "kernels"):
        assert section in results and "error" not in results[section], section
    assert results["fixture"]["fp32_greedy_ids_equal_official"]
    assert all(results["model"]["argmax_equal_per_step"])
    assert len(results["model"]["across_capacities"]["capacities"]) >= 2  # the caches grew
    assert {"b1_tok_s", "b4_tok_s", "b16_tok_s", "b1_tok_s_no_cuda_graph"} <= set(results["decode"])
