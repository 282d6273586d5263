"""CUDA smoke test: every builder listed in the `EXAMPLES` of every `ir/<module>.py` (found with
pkgutil, so new kernel families are picked up as they land) is built with the CUDA knobs
(`schedules.options.build_for`, as the program builds it), goes through the registry's default
CUDA schedule (the family's own rule, else TVM's dlight rules) and `tvm.compile` for cuda:sm_90
(`hymba_compile.build.cuda_source`), and the generated CUDA C is compiled with nvcc for sm_90 (a
fatbin: front end, PTX and ptxas, which also checks resources such as shared memory). No GPU is
needed. tests/test_cuda_compile.py checks the same kernels in one module for every arch (in the
default run); this one compiles each kernel on its own, through TVM's own nvcc wrapper.

Outcomes per builder:
- pass: a real CUDA kernel (every store of the scheduled function under a thread binding), and
  nvcc accepts it;
- fail: the kernel (or part of it) lands in the host (LLVM) module, where it would run on the CPU
  against device pointers (tvm-0.27 notes, Part 2 Q1), or the schedule, TVM's CUDA codegen or
  nvcc raised;
- xfail (strict): a builder listed in KNOWN_GPU_GAPS (empty: every kernel has a GPU schedule);
- skip: nvcc is not on PATH (the CUDA C is still generated and checked).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
import traceback

import pytest
import tvm
from tvm.support import nvcc

from hymba_compile import ir
from hymba_compile.build import cuda_source
from hymba_compile.schedules import apply_schedule, named_target
from hymba_compile.schedules.coverage import host_stores
from hymba_compile.schedules.options import build_for

# TVM's build plus nvcc take ~1 s per example: 64 s for the 62 examples of today on the shared
# 2-core box (one core busy elsewhere); hence slow (`pytest -m slow`).
pytestmark = pytest.mark.slow

TARGET = "cuda:sm_90"
ARCH = "sm_90"
NVCC = shutil.which("nvcc")


# Builders that do not lower for CUDA yet, each a strict xfail (the test turns red when one
# starts passing). Empty: every kernel has a GPU schedule; keep it that way.
KNOWN_GPU_GAPS: dict[str, str] = {}


def _examples() -> list:
    params = []
    for info in sorted(pkgutil.iter_modules(ir.__path__), key=lambda m: m.name):
        try:
            module = importlib.import_module(f"{ir.__name__}.{info.name}")
        except Exception:  # a broken module must fail loudly, not vanish from the list
            params.append(pytest.param(info.name, None, None, traceback.format_exc(),
                                       id=f"{info.name}:import"))
            continue
        for i, (builder, args) in enumerate(getattr(module, "EXAMPLES", [])):
            shown = ",".join(str(a) for a in args)
            gap = KNOWN_GPU_GAPS.get(builder.__name__)
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            params.append(pytest.param(info.name, builder, tuple(args), None, marks=marks,
                                       id=f"{info.name}:{i}:{builder.__name__}({shown})"))
    return params


def _host_module_has(executable_module, name: str) -> bool:
    try:
        return name in executable_module.inspect_source("ll")
    except Exception:
        return False


@pytest.mark.parametrize("module, builder, args, import_error", _examples())
def test_cuda_codegen(module, builder, args, import_error):
    if import_error is not None:
        pytest.fail(f"ir/{module}.py does not import:\n{import_error}")
    tgt = named_target(TARGET)
    func = build_for(builder, args, tgt)
    name = str(func.attrs["global_symbol"])
    stray = host_stores(apply_schedule(func, tgt)["main"])
    assert not stray, (f"{module}.{builder.__name__}{args}: {stray} stores outside any thread "
                       f"binding: they would run on the host against device pointers")
    try:
        src = cuda_source(func, TARGET)
    except RuntimeError as e:
        if "no CUDA module" not in str(e):
            raise
        src = ""
    # TVM names the device kernels after the symbol with non-word characters as "_" (RoPE's
    # symbol holds its base, "base74534.8")
    if re.sub(r"\W", "_", name) + "_kernel" not in src:
        exe = tvm.compile(apply_schedule(func, tgt), target=tgt)
        where = "the host (LLVM) module" if _host_module_has(exe.mod, name) else "neither module"
        pytest.fail(f"{module}.{builder.__name__}{args}: no CUDA kernel for {name!r} ({where}): "
                    f"a kernel without blockIdx/threadIdx bindings would run on the CPU against "
                    f"device pointers; it needs a GPU schedule")
    assert "__global__" in src
    if NVCC is None:
        pytest.skip("nvcc not found on PATH: CUDA C generated but not compiled (install the CUDA "
                    "toolkit or put nvcc on PATH to check it)")
    with tgt:  # compile_cuda wants a CUDA target in scope for the arch
        fatbin = nvcc.compile_cuda(src, target_format="fatbin", arch=ARCH, compiler="nvcc")
    assert len(fatbin) > 0
