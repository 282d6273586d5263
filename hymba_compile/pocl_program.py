"""The whole compiled program with every kernel run as its CUDA schedule on pocl (OpenCL on the
CPU), everything else (reshapes, slices, concats, zeros, the Relax VM) on the CPU via LLVM.

`build_program(spec, named_target("cuda:sm_90"))` gives a Relax module whose PrimFuncs are the
CUDA-scheduled TIR. `pocl_executable` rewrites every kernel call into a call of a registered
packed function that runs that PrimFunc on pocl (`pocl.PoclKernel`), drops the PrimFuncs and
compiles the rest for llvm; `runtime.CompiledRuntime` then drives it as it drives a CPU build:

    mod, _ = build_program(spec, named_target("cuda:sm_90"))
    runtime = CompiledRuntime(pocl_executable(mod), spec, params)

Rewrites (the kernel's arguments are passed unchanged, in the PrimFunc's order):
  call_tir(f, args, outs)          -> call_dps_packed("hymba.pocl.<f>.<hash>", args, outs)
  call_tir_inplace(f, args, idx)   -> call_inplace_packed(name, *args, inplace_indices=idx):
      the packed function writes the aliased arguments in place, allocates the fresh (-1)
      outputs itself and returns the outputs, so the aliasing the program threads through
      (caches, conv and SSM state) is kept.
Kernels are lowered and built on pocl on their first call (cached per process).
"""

from __future__ import annotations

import torch
import tvm
import tvm_ffi
from tvm import relax, tirx

from .opencl_lower import lower_to_opencl
from .pocl import PoclKernel
from .tir_eval import evaluate

PREFIX = "hymba.pocl"
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_CALL_TIR_INPLACE = tvm.ir.Op.get("relax.call_tir_inplace")
_TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "int32": torch.int32, "int64": torch.int64}
_KERNELS: dict[str, PoclKernel] = {}  # packed-function name -> built kernel


def _kernel(name: str, func: tirx.PrimFunc) -> PoclKernel:
    """The PrimFunc (already scheduled) lowered to OpenCL and built on pocl, once per name."""
    if name not in _KERNELS:
        program = lower_to_opencl(tvm.IRModule({"main": func}))
        _KERNELS[name] = PoclKernel(program, "cuda", "as-built")
    return _KERNELS[name]


def _torch(args) -> list[torch.Tensor]:
    return [torch.from_dlpack(a) for a in args]


def _dps(name: str, func: tirx.PrimFunc):
    """Packed function (inputs..., outputs...) -> None: the kernel writes the outputs."""
    def run(*args):
        _kernel(name, func)(*_torch(args))
    return run


def _inplace(name: str, func: tirx.PrimFunc, indices: list[int]):
    """Packed function (args...) -> outputs: the aliased args written in place, the fresh
    outputs allocated here (their shapes: the PrimFunc's, with its size vars bound from the
    args' shapes)."""
    def run(*args):
        kernel = _kernel(name, func)
        ins = _torch(args)
        params = kernel.program.params
        env = {dim: int(size) for p, t in zip(params, ins) if p.shape is not None
               for dim, size in zip(p.shape, t.shape) if isinstance(dim, tirx.Var)}
        outs = [torch.empty([evaluate(d, env) for d in p.shape], dtype=_TORCH[p.dtype])
                for p in params[len(ins):]]
        kernel(*ins, *outs)
        fresh = iter(outs)
        result = [args[i] if i >= 0 else tvm.runtime.from_dlpack(next(fresh)) for i in indices]
        return result[0] if len(result) == 1 else tvm_ffi.Array(result)
    return run


def _name(gv: relax.GlobalVar, func: tirx.PrimFunc) -> str:
    """Per symbol and IR: two programs whose same-named kernels differ do not share one."""
    return f"{PREFIX}.{gv.name_hint}.{tvm_ffi.structural_hash(func) & 0xFFFFFFFF:08x}"


@relax.expr_functor.mutator
class _ToPocl(relax.PyExprMutator):
    """Replaces call_tir / call_tir_inplace by calls of registered pocl packed functions."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod

    def visit_call_(self, call):
        if call.op not in (_CALL_TIR, _CALL_TIR_INPLACE):
            return super().visit_call_(call)
        gv, args = call.args[0], [self.visit_expr(a) for a in call.args[1].fields]
        if len(call.args) > 2:
            raise NotImplementedError(f"{gv.name_hint}: call_tir with tir_vars")
        func = self.mod[gv]
        name = _name(gv, func)
        out = call.ty_args[0]
        if call.op == _CALL_TIR:
            tvm_ffi.register_global_func(name, _dps(name, func), override=True)
            outs = list(out.fields) if isinstance(out, relax.TupleType) else [out]
            return relax.call_dps_packed(name, relax.Tuple(args), outs)
        indices = [int(i) for i in call.attrs.inplace_indices]
        tvm_ffi.register_global_func(name, _inplace(name, func, indices), override=True)
        return relax.op.call_inplace_packed(name, *args, inplace_indices=indices, ty_args=out)


def to_pocl(mod: tvm.IRModule) -> tvm.IRModule:
    """The Relax functions of `mod` with every kernel call going to pocl, and no PrimFuncs."""
    mutator = _ToPocl(mod)
    out = {gv: mutator.visit_expr(f) for gv, f in mod.functions.items()
           if isinstance(f, relax.Function)}
    left = []
    for f in out.values():  # every kernel call must now go to pocl, none to a (dropped) PrimFunc
        tvm_ffi.structural_walk(f, (relax.Call, lambda c: left.append(c)
                                    if c.op in (_CALL_TIR, _CALL_TIR_INPLACE) else None))
    if left:
        raise NotImplementedError(f"{len(left)} kernel calls were not rewritten: {left[0]}")
    return tvm.IRModule(out, attrs=mod.attrs)


def pocl_executable(mod: tvm.IRModule, host: str = "cpu"):
    """`mod` (built for a CUDA target) compiled for the CPU with its kernels on pocl."""
    from hymba_compile.schedules import named_target

    return tvm.compile(to_pocl(mod), target=named_target(host))
