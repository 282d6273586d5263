"""The whole program's device code for every NVIDIA architecture: every kernel that
`build_program` schedules for cuda:sm_90 (the CUDA knobs, the program's own sizes and dtypes:
float32 activations, bf16 caches, batch buckets, symbolic capacities) lowered into one CUDA
source and compiled by one nvcc call for every supported arch, with the checks and budgets of
tests/test_cuda_compile.py (no host code, no spills, small stack, registers and shared memory
within the family's budget). The tiny preset runs by default (~25 s); the hymba-1.5b bf16 program,
the real target (~45 s), is slow."""

from __future__ import annotations

import pytest
from tvm import tirx

from hymba_compile import cuda_compile as cc
from hymba_compile.config import preset
from hymba_compile.program import ProgramSpec, build_program
from hymba_compile.schedules import named_target
from tests.test_cuda_compile import STACK_LIMIT, _over_budget, _spills, needs_nvcc

pytestmark = needs_nvcc


def _program_kernels(name: str, dtype: str) -> dict:
    mod, _ = build_program(ProgramSpec(preset(name), dtype), named_target("cuda:sm_90"))
    return {str(f.attrs["global_symbol"]): f for f in mod.functions.values()
            if isinstance(f, tirx.PrimFunc)}


def _check(name: str, dtype: str) -> None:
    kernels = _program_kernels(name, dtype)
    code = cc.lower_cuda(kernels, "cuda:sm_90")  # raises naming any kernel left on the host
    assert set(code.kernels.values()) == set(kernels)
    archs = cc.supported_archs()
    _, usage = cc.compile_with_resources(code, archs)
    rows = cc.resource_table(code, usage)
    assert {r["arch"] for r in rows} == set(archs)
    assert {r["symbol"] for r in rows} == set(kernels)
    problems = [p for r in rows for p in (_spills(r), _over_budget(r)) if p]
    problems += [f"{r['kernel']} {r['arch']}: {r['stack_bytes']} B stack" for r in rows
                 if r["stack_bytes"] > STACK_LIMIT]
    assert not problems, "\n".join(problems)


def test_tiny_program_compiles_for_every_arch():
    _check("tiny", "float32")


@pytest.mark.slow
def test_hymba_1_5b_bf16_program_compiles_for_every_arch():
    _check("hymba-1.5b", "bfloat16")
