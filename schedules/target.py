"""Named targets: "cpu" (LLVM for this host's CPU) and "cuda:sm_XX" (NVIDIA, one per arch)."""

from __future__ import annotations

import re

import tvm
from tvm.target import codegen

# NVIDIA architectures the project compiles for (nvcc 13 refuses sm_70 and older).
CUDA_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
MIN_CUDA_ARCH = 75


def host_mcpu() -> str:
    """LLVM's name for this machine's CPU (e.g. znver4, sapphirerapids)."""
    return codegen.llvm_get_system_cpu()


def named_target(name: str = "cpu") -> tvm.target.Target:
    """A tvm Target from a project name: "cpu", "cpu:<mcpu>", "cuda:sm_80" ... "cuda:sm_90a"."""
    if name == "cpu":
        return tvm.target.Target({"kind": "llvm", "mcpu": host_mcpu()})
    if name.startswith("cpu:"):
        return tvm.target.Target({"kind": "llvm", "mcpu": name.split(":", 1)[1]})
    match = re.fullmatch(r"cuda:(sm_(\d+)a?)", name)
    if match:
        if int(match.group(2)) < MIN_CUDA_ARCH:
            raise ValueError(f"target {name!r}: architectures before sm_{MIN_CUDA_ARCH} are not "
                             f"supported (nvcc 13 dropped them); the project builds "
                             f"{', '.join(CUDA_ARCHS)}")
        return tvm.target.Target({"kind": "cuda", "arch": match.group(1),
                                  "max_num_threads": 1024, "thread_warp_size": 32,
                                  "max_shared_memory_per_block": 49152})
    raise ValueError(f"unknown target {name!r}; use 'cpu', 'cpu:<mcpu>' or 'cuda:sm_XX'")


def is_cpu(target: tvm.target.Target) -> bool:
    return target.kind.name == "llvm"


def target_kind(target: tvm.target.Target) -> str:
    """The project's name for a target's kind: "cpu" (llvm) or "cuda"."""
    kind = target.kind.name
    if kind == "llvm":
        return "cpu"
    if kind == "cuda":
        return "cuda"
    raise ValueError(f"target kind {kind!r} has no schedules here (cpu or cuda)")


def arch_number(target: tvm.target.Target) -> int | None:
    """90 for sm_90 / sm_90a, None for a target without an NVIDIA arch."""
    if target.kind.name != "cuda" or "arch" not in target.attrs:
        return None
    match = re.fullmatch(r"sm_(\d+)a?", str(target.attrs["arch"]))
    return int(match.group(1)) if match else None
