"""Compile ir/ kernels for a target with a schedule from schedules/.

`choosing({family: Choice})` makes every kernel built inside it (by `knobbed` and
`build_kernel`, as the kernel benches build theirs) use that schedule variant, rule knobs and
builder knobs for the family: how `explore` times a variant in the benches' own cases."""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field

import tvm
import tvm_ffi

from hymba_compile.schedules import apply_schedule, named_target
from hymba_compile.schedules.options import BUILDER_FAMILY
from hymba_compile.schedules.registry import family_of

from .choices import LIBRARY, TUNED, Choice


_CHOICES: contextvars.ContextVar[dict] = contextvars.ContextVar("kernel_choices", default={})
_TUNED_DIR: contextvars.ContextVar = contextvars.ContextVar("tuned_dir", default=None)
_REUSE: contextvars.ContextVar = contextvars.ContextVar("kernel_reuse", default=None)
_BUILD_SECONDS = [0.0]  # scheduling + tvm.compile time of every build_kernel call so far


def build_seconds() -> float:
    """Seconds spent in `build_kernel` (schedule and compile) by this process so far."""
    return _BUILD_SECONDS[0]


@contextlib.contextmanager
def choosing(choices: dict[str, Choice]):
    """Within the block, kernels of the named families are built with these choices."""
    token = _CHOICES.set({**_CHOICES.get(), **choices})
    try:
        yield
    finally:
        _CHOICES.reset(token)


@contextlib.contextmanager
def reusing_kernels():
    """Within the block, `build_kernel` compiles each distinct (PrimFunc, target, schedule)
    once and hands the same kernel back after that (benches that set a case up many times)."""
    token = _REUSE.set({})
    try:
        yield
    finally:
        _REUSE.reset(token)


@contextlib.contextmanager
def tuning_database(folder):
    """Within the block, variant "tuned" takes its schedules from the MetaSchedule database in
    `folder` (`python -m hymba_compile tune`)."""
    token = _TUNED_DIR.set(folder)
    try:
        yield
    finally:
        _TUNED_DIR.reset(token)


def tuned_schedule(func: tvm.tirx.PrimFunc, tgt: tvm.target.Target, folder=None):
    """The tuned schedule of `func` from the database in `folder` (default: the one set by
    `tuning_database`), None when it has no record of this workload."""
    from hymba_compile.schedules.tuned import apply_tuned

    folder = folder if folder is not None else _TUNED_DIR.get()
    return None if folder is None else apply_tuned(func, tgt, folder)


def builder_knobs(builder, choices: dict) -> dict:
    """The builder knobs that `choices` ({family: Choice}) sets for the family `builder` makes."""
    choice = choices.get(BUILDER_FAMILY.get(builder.__name__, ""))
    return dict(Choice.coerce(choice).builder_knobs) if choice is not None else {}


def knobbed(builder, *args, **kwargs) -> tvm.tirx.PrimFunc:
    """builder(*args, **kwargs) with the builder knobs chosen for its family (`choosing`); a
    chosen knob wins over the same keyword given here (a case's own block size or chunk)."""
    return builder(*args, **{**kwargs, **builder_knobs(builder, _CHOICES.get())})


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
    """Schedule `func` for the named target (the variant named, else the one chosen for its
    family by `choosing`, else the default) and compile (once per distinct kernel inside
    `reusing_kernels`)."""
    knobs = None
    if variant is None:
        chosen = _CHOICES.get()
        choice = chosen.get(str(func.attrs["global_symbol"])) or chosen.get(family_of(func))
        if choice is not None:
            variant, knobs = choice.variant, dict(choice.rule_knobs)
    memo = _REUSE.get()
    if memo is None:
        return _compile(func, target, variant, knobs)
    key = (tvm_ffi.structural_hash(func), str(func.attrs["global_symbol"]), target, variant,
           tuple(sorted((knobs or {}).items())), str(_TUNED_DIR.get()))
    if key not in memo:
        memo[key] = _compile(func, target, variant, knobs)
    return memo[key]


def _compile(func: tvm.tirx.PrimFunc, target: str, variant: str | None,
             knobs: dict | None) -> Kernel:
    """Schedule `func` with this variant and rule knobs (None: the default) and compile."""
    if variant == LIBRARY:
        from .library import library_kernel

        return library_kernel(func, target)
    tgt = named_target(target)
    t0 = time.perf_counter()
    if variant == TUNED:
        sch = tuned_schedule(func, tgt)
        if sch is None:
            raise ValueError(f"the tuning database {_TUNED_DIR.get()} has no record of "
                             f"{func.attrs['global_symbol']}")
        mod = sch.mod
    else:
        mod = apply_schedule(func, tgt, variant, knobs)
    exe = tvm.compile(mod, target=tgt)
    _BUILD_SECONDS[0] += time.perf_counter() - t0
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
