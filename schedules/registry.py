"""Which schedule rule runs a kernel family on a target, by variant name and target kind.

Rules live in `schedules/<kind>/<family>.py` (kinds: "cpu" for LLVM, "cuda") and register here with
`@rule(family, variant, kind, archs=...)` (or the shorthands `cpu_rule` / `cuda_rule`). A rule is
`apply(func, target, **knobs) -> s_tir.Schedule | None`; None means "does not apply to this
function" and the next registered variant is tried. A rule may declare a knob grid (`grid`:
keyword -> the values worth trying, its own default among them), which `explore` walks. The first registered variant of a family on a kind is its
default. On CUDA, a family whose rules all decline falls through to TVM's dlight GPU rules
(variant "dlight"). Every family also has the variant "unscheduled" (the IR as written, for
checking rules against).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import tvm
from tvm import s_tir
from tvm.s_tir import dlight as dl

from hymba_compile.ir.common import KERNEL_ATTR

from .target import arch_number, is_cpu, target_kind

Rule = Callable[[tvm.tirx.PrimFunc, tvm.target.Target], "s_tir.Schedule | None"]
UNSCHEDULED = "unscheduled"
DLIGHT = "dlight"
FAMILY_MODULES = ("norm", "linear", "conv", "scan", "attention", "combine", "embed")
KINDS = ("cpu", "cuda")


@dataclass(frozen=True)
class RuleEntry:
    """A registered rule with the architectures it serves (None: every one of its kind)."""

    fn: Rule
    min_arch: int | None = None  # e.g. 80 for sm_80 and newer
    max_arch: int | None = None
    grid: tuple = ()  # ((knob, (values...)), ...): the rule's keyword knobs worth exploring

    def serves(self, target: tvm.target.Target) -> bool:
        arch = arch_number(target)
        if arch is None:
            return True
        return (self.min_arch is None or arch >= self.min_arch) and \
            (self.max_arch is None or arch <= self.max_arch)


_RULES: dict[str, dict[str, dict[str, RuleEntry]]] = {kind: {} for kind in KINDS}
_loaded: set[str] = set()


def rule(family: str, variant: str, kind: str, min_arch: int | None = None,
         max_arch: int | None = None, grid: dict | None = None):
    """Decorator registering `apply(func, target, **knobs) -> Schedule | None` for
    family/variant on a target kind, optionally only for architectures [min_arch, max_arch]
    (sm numbers), with the knob grid `grid` (keyword -> values) that exploration walks."""
    if kind not in KINDS:
        raise ValueError(f"unknown target kind {kind!r}; expected one of {KINDS}")
    frozen = tuple((k, tuple(v)) for k, v in (grid or {}).items())

    def register(fn: Rule) -> Rule:
        _RULES[kind].setdefault(family, {})[variant] = RuleEntry(fn, min_arch, max_arch, frozen)
        return fn
    return register


def cpu_rule(family: str, variant: str, grid: dict | None = None):
    return rule(family, variant, "cpu", grid=grid)


def cuda_rule(family: str, variant: str, min_arch: int | None = None,
              max_arch: int | None = None, grid: dict | None = None):
    return rule(family, variant, "cuda", min_arch, max_arch, grid)


def _load_rules(kind: str) -> None:
    if kind in _loaded:
        return
    for name in FAMILY_MODULES:
        try:
            importlib.import_module(f"{__package__}.{kind}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{kind}.{name}":
                raise
    _loaded.add(kind)


def family_of(func: tvm.tirx.PrimFunc) -> str:
    if func.attrs is None or KERNEL_ATTR not in func.attrs:
        raise ValueError(f"PrimFunc has no {KERNEL_ATTR!r} attribute; build it with ir/")
    return str(func.attrs[KERNEL_ATTR])


def registered(family: str, target: tvm.target.Target) -> dict[str, RuleEntry]:
    """The family's own rules serving `target`, default first (no dlight / unscheduled)."""
    kind = target_kind(target)
    _load_rules(kind)
    return {name: entry for name, entry in _RULES[kind].get(family, {}).items()
            if entry.serves(target)}


def variants(func_or_family, target: tvm.target.Target) -> list[str]:
    """Variant names available for a kernel (or family) on `target`, default first."""
    family = func_or_family if isinstance(func_or_family, str) else family_of(func_or_family)
    names = list(registered(family, target))
    if not is_cpu(target):
        names.append(DLIGHT)
    return [*names, UNSCHEDULED]


# Variants that change the arithmetic, not only its order (bf16dot rounds the activations to
# bf16): never the reference another schedule of the same IR is checked against.
NUMERICS_VARIANTS = ("bf16dot",)


def as_written_variant(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> str:
    """The first registered variant of `func`'s family on `target` that computes the IR as
    written (not a NUMERICS_VARIANTS one): the CPU build other schedules are checked against."""
    return next(v for v in variants(func, target) if v not in NUMERICS_VARIANTS)


def knob_grid(family: str, variant: str, target: tvm.target.Target) -> dict[str, tuple]:
    """The knob grid a family's variant declares on `target` ({} for dlight, unscheduled and
    rules without knobs)."""
    entry = registered(family, target).get(variant)
    return dict(entry.grid) if entry is not None else {}


def _dlight(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    with target:
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(),
                                       dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                       dl.gpu.Fallback())(mod)


def schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target,
             variant: str | None = None, knobs: dict | None = None) -> tuple[tvm.IRModule, str]:
    """(scheduled IRModule {"main": func}, the variant that produced it) for `target`.

    Named variant: that rule (with `knobs`, keywords of its grid), or an error naming the family
    if it does not apply. Default: the first registered rule that applies; on CUDA dlight's
    rules if none does; on the CPU an error."""
    family = family_of(func)
    names = variants(family, target)
    if variant is not None and variant not in names:
        raise ValueError(f"no schedule variant {variant!r} for {family} on "
                         f"{target_kind(target)}; available: {names}")
    if knobs:
        grid = knob_grid(family, variant, target) if variant is not None else {}
        unknown = sorted(set(knobs) - set(grid))
        if variant is None or unknown:
            raise ValueError(f"schedule {family}/{variant} has no knobs {unknown or sorted(knobs)}"
                             f"; its grid: {sorted(grid)}")
    mod = tvm.IRModule({"main": func})
    if variant == UNSCHEDULED:
        return mod, UNSCHEDULED
    rules = registered(family, target)
    if variant == DLIGHT and DLIGHT not in rules:  # GPU targets: TVM's stock dlight rules
        return _dlight(mod, target), DLIGHT
    candidates = [variant] if variant is not None else list(rules)
    for name in candidates:
        sch = rules[name].fn(func, target, **(knobs or {}))
        if sch is not None:
            return sch.mod, name
    if variant is not None:
        raise ValueError(f"schedule {family}/{variant} does not apply to this function "
                         f"({func.attrs['global_symbol']})")
    if not is_cpu(target):
        return _dlight(mod, target), DLIGHT
    raise ValueError(f"no CPU schedule of {family} applies to {func.attrs['global_symbol']}; "
                     f"registered: {list(rules)}")


def apply_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target,
                   variant: str | None = None, knobs: dict | None = None) -> tvm.IRModule:
    """A scheduled IRModule {"main": func} for `target` with the named (or default) variant."""
    return schedule(func, target, variant, knobs)[0]
