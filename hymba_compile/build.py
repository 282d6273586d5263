"""Compile ir/ kernels for a target with a schedule from schedules/."""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm

from schedules import apply_schedule, named_target
from schedules.registry import family_of


@dataclass
class Kernel:
    """A compiled PrimFunc; call it with torch tensors (inputs then outputs, as in the IR)."""

    name: str
    variant: str
    target: str
    module: tvm.runtime.Module
    _main: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._main = self.module["main"]  # looked up once: a lookup costs ~25 us per call

    def __call__(self, *args):
        return self._main(*args)


def build_kernel(func: tvm.tirx.PrimFunc, target: str = "cpu", variant: str | None = None) -> Kernel:
    """Schedule `func` for the named target (default variant unless one is named) and compile."""
    tgt = named_target(target)
    mod = apply_schedule(func, tgt, variant)
    exe = tvm.compile(mod, target=tgt)
    return Kernel(str(func.attrs["global_symbol"]), variant or "default", target, exe.mod)


def cuda_source(func: tvm.tirx.PrimFunc, target: str = "cuda:sm_90") -> str:
    """The CUDA C that TVM generates for `func` under the target's default schedule (its CUDA
    rule, else dlight's GPU rules; no GPU needed)."""
    tgt = named_target(target)
    mod = apply_schedule(func, tgt)
    exe = tvm.compile(mod, target=tgt)
    for imported in exe.mod.imports:
        if imported.kind == "cuda":
            return imported.inspect_source()
    raise RuntimeError(f"no CUDA module was produced for {family_of(func)}")
