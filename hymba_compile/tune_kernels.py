"""The kernels a program uses, as tuning workloads: the unscheduled PrimFuncs of `ir/` that
`program.build_program` calls, with any symbolic size bound to a static one."""

from __future__ import annotations

from dataclasses import dataclass

import tvm_ffi
from tvm import tirx

from hymba_compile.schedules.registry import family_of


# Symbolic sizes that count sequences in a batch (bound to 1); every other one counts rows,
# tokens or cache slots (bound to the representative prefill length).
BATCH_VARS = ("batch", "nb", "Bt")


family = family_of  # the kernel family of a PrimFunc (its ir/ attribute)


def symbol(func: tirx.PrimFunc) -> str:
    return str(func.attrs["global_symbol"])


def symbolic_vars(func: tirx.PrimFunc) -> list[tirx.Var]:
    """The size variables in the shapes of `func`'s buffer parameters, in order of appearance."""
    found: dict[str, tirx.Var] = {}
    for param in func.params:
        for dim in getattr(param, "shape", None) or ():
            for var in tirx.analysis.undefined_vars(dim, []):
                found.setdefault(str(var), var)
    return list(found.values())


def static_sizes(func: tirx.PrimFunc, rows: int) -> dict[str, int]:
    """The value each symbolic size of `func` is tuned at: 1 for a batch count, `rows` else."""
    return {str(v): 1 if str(v) in BATCH_VARS else rows for v in symbolic_vars(func)}


@dataclass(frozen=True)
class Workload:
    """A kernel of the program and its static form (the same PrimFunc when it has no symbolic
    size) with the sizes bound."""

    func: tirx.PrimFunc
    static: tirx.PrimFunc
    sizes: dict[str, int]

    @property
    def family(self) -> str:
        return family(self.func)

    @property
    def symbol(self) -> str:
        return symbol(self.func)

    def shapes(self) -> list[str]:
        """Each parameter as name[dims]dtype at the static sizes."""
        return [f"{p}[{','.join(str(int(d)) for d in p.shape)}]{p.dtype}"
                for p in self.static.params]


def bind_sizes(func: tirx.PrimFunc, sizes: dict[str, int]) -> tirx.PrimFunc:
    """`func` with each symbolic size named in `sizes` replaced by its value (`specialize`
    through the parameters whose shape has that size as a whole dimension)."""
    values = {str(v): tirx.IntImm(str(v.ty.dtype), sizes[str(v)]) for v in symbolic_vars(func)}
    bound: dict = {}
    for param in func.params:
        shape = list(getattr(param, "shape", None) or ())
        if not any(isinstance(d, tirx.Var) for d in shape) or not all(
                isinstance(d, (tirx.Var, tirx.IntImm)) for d in shape):
            continue
        dims = [values[str(d)] if isinstance(d, tirx.Var) else d for d in shape]
        bound[param] = tirx.decl_buffer(dims, str(param.dtype), name=str(param))
    static = func.specialize(bound) if bound else func
    left = [str(v) for v in symbolic_vars(static)]
    if left:
        raise ValueError(f"{symbol(func)}: sizes {left} appear in no parameter's shape as a "
                         "whole dimension; they cannot be bound")
    return static


def workloads(kernels: list[tirx.PrimFunc], rows: int) -> list[Workload]:
    """A static Workload per kernel (symbolic sizes bound by `static_sizes`), one per distinct
    static PrimFunc (structural hash)."""
    seen: set[int] = set()
    out = []
    for func in kernels:
        sizes = static_sizes(func, rows)
        static = bind_sizes(func, sizes) if sizes else func
        key = tvm_ffi.structural_hash(static)
        if key not in seen:
            seen.add(key)
            out.append(Workload(func, static, sizes))
    return out
