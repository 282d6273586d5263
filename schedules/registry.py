"""Which schedule rule runs a kernel family on a target, by variant name.

CPU rules live in `schedules/cpu/` and register here with `@cpu_rule(family, variant)`; the first
registered variant of a family is its default. Every family also has the variant "unscheduled"
(the IR as written, for checking rules against). CUDA uses TVM's dlight GPU rules.
"""

from __future__ import annotations

import importlib
from typing import Callable

import tvm
from tvm import s_tir
from tvm.s_tir import dlight as dl

from ir.common import KERNEL_ATTR

from .target import is_cpu

Rule = Callable[[tvm.tirx.PrimFunc, tvm.target.Target], "s_tir.Schedule | None"]
UNSCHEDULED = "unscheduled"
_CPU_RULES: dict[str, dict[str, Rule]] = {}
_CPU_MODULES = ("norm", "linear", "conv", "scan", "attention", "combine", "embed")
_loaded = False


def cpu_rule(family: str, variant: str):
    """Decorator registering `apply(func, target) -> Schedule | None` for a family/variant."""
    def register(fn: Rule) -> Rule:
        _CPU_RULES.setdefault(family, {})[variant] = fn
        return fn
    return register


def _load_rules() -> None:
    global _loaded
    if not _loaded:
        for name in _CPU_MODULES:
            try:
                importlib.import_module(f"schedules.cpu.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"schedules.cpu.{name}":
                    raise
        _loaded = True


def family_of(func: tvm.tirx.PrimFunc) -> str:
    if func.attrs is None or KERNEL_ATTR not in func.attrs:
        raise ValueError(f"PrimFunc has no {KERNEL_ATTR!r} attribute; build it with ir/")
    return str(func.attrs[KERNEL_ATTR])


def variants(func_or_family, target: tvm.target.Target) -> list[str]:
    """Variant names available for a kernel (or family) on `target`, default first."""
    family = func_or_family if isinstance(func_or_family, str) else family_of(func_or_family)
    if not is_cpu(target):
        return ["dlight", UNSCHEDULED]
    _load_rules()
    return [*_CPU_RULES.get(family, {}), UNSCHEDULED]


def apply_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target,
                   variant: str | None = None) -> tvm.IRModule:
    """A scheduled IRModule {"main": func} for `target` with the named (or default) variant."""
    family = family_of(func)
    names = variants(family, target)
    variant = variant or names[0]
    if variant not in names:
        raise ValueError(f"no schedule variant {variant!r} for {family} on {target.kind.name}; "
                         f"available: {names}")
    mod = tvm.IRModule({"main": func})
    if variant == UNSCHEDULED:
        return mod
    if not is_cpu(target):
        with target:
            return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(),
                                           dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                           dl.gpu.Fallback())(mod)
    sch = _CPU_RULES[family][variant](func, target)
    if sch is None:
        raise ValueError(f"schedule {family}/{variant} does not apply to this function")
    return sch.mod
