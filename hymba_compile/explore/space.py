"""The points `explore` tries per kernel family on a target: the default, then every registered
schedule variant x its rule's knob grid x the family's builder knob grid
(`schedules.options.builder_grid`), plus the library variant where the target has one. A point
that builds exactly what the default builds is left out."""

from __future__ import annotations

import inspect
import itertools

import tvm

from hymba_compile.ir import attention as ir_attention
from hymba_compile.ir import scan as ir_scan
from hymba_compile.schedules.options import BUILDER_FAMILY, builder_grid, kernel_options
from hymba_compile.schedules.registry import DLIGHT, knob_grid, registered
from hymba_compile.schedules.target import is_cpu

from ..choices import LIBRARY, Choice
from ..library import supports

_BUILDERS_BY_FAMILY: dict[str, list[str]] = {}
for _builder, _family in BUILDER_FAMILY.items():
    _BUILDERS_BY_FAMILY.setdefault(_family, []).append(_builder)


def _grid_points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _rule_defaults(family: str, variant: str, target: tvm.target.Target) -> dict:
    fn = registered(family, target)[variant].fn
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _builder_defaults(family: str, target: tvm.target.Target) -> dict:
    """The builder knob values the target uses by default (ir/ defaults, then the target's)."""
    defaults = {}
    for name in _BUILDERS_BY_FAMILY.get(family, []):
        for module in (ir_attention, ir_scan):  # where BUILDER_FAMILY's builders live
            fn = getattr(module, name, None)
            if fn is not None:
                defaults.update({k: p.default for k, p in inspect.signature(fn).parameters.items()
                                 if p.default is not inspect.Parameter.empty})
    defaults.update(kernel_options(family, target))
    return defaults


def points(family: str, target: tvm.target.Target, target_name: str,
           variants: list[str] | None = None) -> list[Choice]:
    """The default (first), then every distinct point of the family's space on `target`,
    restricted to the named `variants` when given."""
    rules = registered(family, target)
    default_variant = next(iter(rules), None if is_cpu(target) else DLIGHT)
    bdefaults = _builder_defaults(family, target)
    bpoints = _grid_points(builder_grid(family, target))
    out = [Choice()]
    names = list(rules) + ([LIBRARY] if supports(family, target_name) else []) + \
        ([] if is_cpu(target) else [DLIGHT])  # GPU targets: TVM's stock dlight rules too
    for variant in names:
        if variants is not None and variant not in variants:
            continue
        own = variant in rules
        rpoints = _grid_points(knob_grid(family, variant, target)) if own else [{}]
        rdefaults = _rule_defaults(family, variant, target) if own else {}
        for rk in rpoints:
            for bk in (bpoints if variant != LIBRARY else [{}]):
                rk2 = {k: v for k, v in rk.items() if rdefaults.get(k, object()) != v}
                bk2 = {k: v for k, v in bk.items() if bdefaults.get(k, object()) != v}
                choice = Choice.of(variant, rk2, bk2)
                if choice not in out and _differs(choice, default_variant):
                    out.append(choice)
    return out


def _differs(choice: Choice, default_variant: str | None) -> bool:
    """False for a point equal to the default: the default variant with no knob changed."""
    return not (choice.variant in (None, default_variant) and not choice.rule_knobs
                and not choice.builder_knobs)
