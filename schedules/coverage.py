"""Which kernels have a real schedule on a target: every builder in the `EXAMPLES` of every ir/
module, built with the target's knobs, scheduled with its default variant and checked to put all
of its work on the device (CUDA: every store under a thread binding; a kernel with an unbound
loop would compile "fine" into the host module and run on the CPU against device pointers).
The CLI's refusal, the docs and the tests ask this, not a hand-kept list."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import tirx

from hymba_compile import ir

from .options import build_for
from .registry import DLIGHT, family_of, schedule
from .target import is_cpu, named_target


@dataclass(frozen=True)
class Covered:
    """One builder example on one target: the family, the variant its default schedule resolved
    to, and whether that schedule is real (else `reason` says why not)."""

    family: str
    builder: str
    args: tuple
    variant: str | None
    scheduled: bool
    reason: str = ""


def examples() -> list[tuple]:
    """(builder, args) of every ir/ module's EXAMPLES, modules in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(ir.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{ir.__name__}.{info.name}")
        found.extend(getattr(module, "EXAMPLES", []))
    return found


def host_stores(func: tirx.PrimFunc) -> int:
    """Buffer stores of a scheduled PrimFunc that no thread-binding loop encloses (0 for a
    kernel that runs entirely on the GPU)."""
    count = 0

    def visit(node):
        nonlocal count
        if isinstance(node, tirx.For) and node.kind == tirx.ForKind.THREAD_BINDING:
            return tvm_ffi.WalkResult.SKIP
        if isinstance(node, tirx.BufferStore):
            count += 1
        return None

    tvm_ffi.structural_walk(func.body, visit, order="pre")
    return count


def check(builder, args: tuple, target: tvm.target.Target) -> Covered:
    """Schedule one builder example for `target` and say whether it is really scheduled."""
    name = builder.__name__
    try:
        func = build_for(builder, args, target)
        family = family_of(func)
    except Exception as e:  # a builder that cannot be built is uncovered, with the reason
        return Covered("?", name, args, None, False, f"builder failed: {e}")
    try:
        mod, variant = schedule(func, target)
    except Exception as e:
        return Covered(family, name, args, None, False, f"{type(e).__name__}: {e}".splitlines()[0])
    if is_cpu(target):
        return Covered(family, name, args, variant, True)
    stray = host_stores(mod["main"])
    if stray:
        return Covered(family, name, args, variant, False,
                       f"{stray} stores outside any thread binding (would run on the host)")
    if variant == DLIGHT:
        try:  # dlight's rules may still fail in codegen: lower fully, without nvcc
            with target:
                tvm.tirx.build(mod, target=target)
        except Exception as e:
            return Covered(family, name, args, variant, False,
                           f"lowering failed: {str(e).strip().splitlines()[-1][:200]}")
    return Covered(family, name, args, variant, True)


@functools.lru_cache(maxsize=8)
def coverage(target_name: str) -> tuple[Covered, ...]:
    """Every builder example checked on the named target ("cpu", "cuda:sm_90", ...)."""
    target = named_target(target_name)
    return tuple(check(builder, tuple(args), target) for builder, args in examples())


def families(target_name: str) -> dict[str, bool]:
    """family -> True when every example of it is really scheduled on the target."""
    result: dict[str, bool] = {}
    for c in coverage(target_name):
        result[c.family] = result.get(c.family, True) and c.scheduled
    return result


def uncovered(target_name: str) -> list[Covered]:
    """The examples without a real schedule on the target (empty when the kernel layer is done)."""
    return [c for c in coverage(target_name) if not c.scheduled]
