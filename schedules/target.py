"""Named targets: "cpu" (LLVM for this host's CPU) and "cuda:sm_XX" (NVIDIA, one per arch)."""

from __future__ import annotations

import re

import tvm
from tvm.target import codegen


def host_mcpu() -> str:
    """LLVM's name for this machine's CPU (e.g. znver4, sapphirerapids)."""
    return codegen.llvm_get_system_cpu()


def named_target(name: str = "cpu") -> tvm.target.Target:
    """A tvm Target from a project name: "cpu", "cpu:<mcpu>", "cuda:sm_80" ... "cuda:sm_90a"."""
    if name == "cpu":
        return tvm.target.Target({"kind": "llvm", "mcpu": host_mcpu()})
    if name.startswith("cpu:"):
        return tvm.target.Target({"kind": "llvm", "mcpu": name.split(":", 1)[1]})
    match = re.fullmatch(r"cuda:(sm_\d+a?)", name)
    if match:
        return tvm.target.Target({"kind": "cuda", "arch": match.group(1),
                                  "max_num_threads": 1024, "thread_warp_size": 32})
    raise ValueError(f"unknown target {name!r}; use 'cpu', 'cpu:<mcpu>' or 'cuda:sm_XX'")


def is_cpu(target: tvm.target.Target) -> bool:
    return target.kind.name == "llvm"
