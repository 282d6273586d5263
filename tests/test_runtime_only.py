"""Loading a prebuilt program needs only TVM's runtime: in a process where TVM is imported
runtime-only (TVM_USE_RUNTIME_LIB=1, as on a machine with the runtime libraries alone), the
model loads a CPU executable compiled beforehand, generates the same tokens as the eager
reference, and neither libtvm_compiler nor any module that builds IR is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from hymba_compile import artifacts
from hymba_compile.config import preset
from hymba_compile.generate import SamplingParams, generate_tokens
from hymba_compile.program_spec import ProgramSpec
from hymba_compile.reference import HymbaReference
from hymba_compile.weights import random_parameters

CHILD = r"""
import json, sys, torch
import hymba_compile, tvm
model = hymba_compile.load("tiny", dtype="float32", seed=7, cache_dir=sys.argv[1],
                           decode_batches=(1,), device="cpu", progress=False)
ids = model.generate(torch.tensor([[5, 9, 2, 77, 31]]), 10)
compiler_modules = sorted(m for m in sys.modules if m.startswith(
    ("tvm.relax", "tvm.s_tir", "ir", "schedules", "hymba_compile.program.",
     "hymba_compile.pipeline", "hymba_compile.program_build", "hymba_compile.cuda")) or m in (
    "hymba_compile.program",))
libs = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in open("/proc/self/maps")
               if "libtvm" in line})
print(json.dumps({"ids": ids.tolist(), "runtime_only": tvm.base._RUNTIME_ONLY,
                  "compiler_modules": compiler_modules, "libs": libs}))
"""


def _child(cache, env_extra):
    env = {**os.environ, "TVM_NUM_THREADS": "2", **env_extra}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(cache)], capture_output=True,
                          text=True, env=env, timeout=600)
    return proc


def test_prebuilt_cpu_program_runs_with_the_runtime_only(tmp_path):
    config = preset("tiny")
    artifacts.ensure_compiled(ProgramSpec(config, "float32", (1,)), "cpu", tmp_path,
                              progress=False)
    proc = _child(tmp_path, {"TVM_USE_RUNTIME_LIB": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["runtime_only"] is True
    assert got["compiler_modules"] == []
    assert "libtvm_runtime.so" in got["libs"] and "libtvm_compiler.so" not in got["libs"]
    reference = HymbaReference(config, random_parameters(config, seed=7, dtype=torch.float32))
    want = generate_tokens(reference, torch.tensor([[5, 9, 2, 77, 31]]), None, 10,
                           SamplingParams(), list(config.eos_ids), 0)
    assert got["ids"] == want.tolist()


def test_runtime_only_without_a_matching_program_says_what_is_there(tmp_path):
    """A cache holding only a decode-batch-(1,) program, asked for (1, 2): no compiler to build
    it, one error listing what is available."""
    config = preset("tiny")
    artifacts.ensure_compiled(ProgramSpec(config, "float32", (1,)), "cpu", tmp_path,
                              progress=False)
    child = CHILD.replace("decode_batches=(1,)", "decode_batches=(1, 2)")
    env = {**os.environ, "TVM_NUM_THREADS": "2", "TVM_USE_RUNTIME_LIB": "1"}
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert "no prebuilt program for cpu" in proc.stderr
    assert "available: cpu (float32, batches [1])" in proc.stderr
    assert "no TVM compiler to build one" in proc.stderr
