"""Lower a CUDA-scheduled PrimFunc for TVM's OpenCL code generator: the OpenCL C, and from the
lowered host function the launches (kernel symbol, argument expressions, grid/block extents),
the scratch buffers allocated between launches and the host's Let bindings, for a runner
(`hymba_compile.pocl`) to evaluate once shapes are known. Facts and traps:
../shared/docs/gpu-notes.md, section 1, and docs/kernels.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir.expr import Call
from tvm.tirx.buffer import BufferType
from tvm.tirx.build import codegen_build, split_host_device_mods

from .tir_eval import dtype_of, op_name

OPENCL_TARGET = {"kind": "opencl", "thread_warp_size": 1, "max_num_threads": 1024,
                 "max_threads_per_block": 1024, "max_shared_memory_per_block": 49152}
_GRID = {"blockIdx.x": 0, "blockIdx.y": 1, "blockIdx.z": 2}
_BLOCK = {"threadIdx.x": 0, "threadIdx.y": 1, "threadIdx.z": 2}


def opencl_target() -> tvm.target.Target:
    """The OpenCL target the CUDA schedules are lowered for, with an llvm host. Warp size 1: with
    32, TVM's allreduce lowering puts barrier() under `if (tid < 16)` (a divergent barrier)."""
    return tvm.target.Target(OPENCL_TARGET, host="llvm")


# ----------------------------------------------------------------------------------------------
# lowering: OpenCL C + the host's launch list
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A PrimFunc parameter: a buffer (dtype, shape exprs with symbolic vars) or a scalar var."""

    name: str
    dtype: str
    shape: tuple | None  # None: a scalar parameter, bound to `var`
    var: object = None
    written: bool = False  # some device code stores into it (copied back after a call)


@dataclass(frozen=True)
class Scratch:
    """A device buffer the host allocates between launches (an intermediate global buffer)."""

    name: str
    dtype: str
    shape: tuple


@dataclass(frozen=True)
class Launch:
    """One kernel launch: args are ("param", i), ("scratch", i) or a scalar (expr, dtype)."""

    symbol: str
    args: tuple
    grid: tuple  # 3 exprs (blockIdx.x, y, z)
    block: tuple  # 3 exprs (threadIdx.x, y, z)
    dyn_shared: object = None  # bytes of dynamic shared memory (expr), if any


@dataclass
class OpenCLProgram:
    """OpenCL C of a scheduled PrimFunc plus what the host function does around the kernels."""

    symbol: str
    source: str
    params: list[Param]
    launches: list[Launch]
    scratch: list[Scratch]
    lets: dict = field(repr=False)  # host Let bindings, var -> value expr (evaluated on demand)


def _shared_dyn_to_shared(mod: tvm.IRModule) -> tvm.IRModule:
    """The module with every "shared.dyn" buffer in scope "shared": TVM's OpenCL codegen emits a
    shared.dyn buffer as a private array (wrong numbers, no error). A TVMScript round trip, done
    only when the scope occurs."""
    text = mod.script()
    if '"shared.dyn"' not in text:
        return mod
    return tvm.script.from_source(text.replace('"shared.dyn"', '"shared"'))


def _written_buffers(func: tirx.PrimFunc) -> set[str]:
    """Names of the buffers a PrimFunc stores into (BufferStore targets)."""
    names: set[str] = set()
    tvm_ffi.structural_walk(func.body, (tirx.BufferStore, lambda s: names.add(s.buffer.name)))
    return names


def _params(func: tirx.PrimFunc) -> list[Param]:
    """The PrimFunc's parameters, buffer or scalar, in order."""
    written = _written_buffers(func)
    out = []
    for var in func.params:
        if isinstance(var.ty, BufferType):
            out.append(Param(var.name, str(var.dtype), tuple(var.shape), var, var.name in written))
        else:
            out.append(Param(var.name, dtype_of(var), None, var))
    return out


class _HostWalk:
    """Collects, in program order, the host function's Let bindings, scratch allocations, buffer
    declarations and kernel launches."""

    def __init__(self, host: tirx.PrimFunc):
        self.args_var = host.params[1]  # (self, args, num_args, result): the packed arguments
        self.lets: dict = {}
        self.scratch: dict = {}  # Buffer -> index into scratch_list
        self.scratch_list: list[Scratch] = []
        self.decls: dict = {}  # Buffer -> data expr
        self.calls: list = []
        tvm_ffi.structural_walk(host.body, [
            (tirx.Bind, self._bind), (tirx.LetStmt, self._bind),
            (tirx.AllocBuffer, self._alloc), (tirx.DeclBuffer, self._decl),
            (Call, self._call)], order="pre")
        for kind in (tirx.For, tirx.While, tirx.IfThenElse):
            tvm_ffi.structural_walk(host.body, (kind, self._no_launch_under))

    def _bind(self, s):
        self.lets[s.var] = s.value

    def _alloc(self, s):
        b = s.buffer
        self.scratch[b] = len(self.scratch_list)
        self.scratch_list.append(Scratch(b.name, str(b.dtype), tuple(b.shape)))

    def _decl(self, s):
        self.decls[s.buffer] = s.data if hasattr(s, "data") else s.buffer.data

    def _call(self, c):
        if op_name(c) == "tirx.call_ffi_kernel":
            self.calls.append(c)

    def _no_launch_under(self, s):
        found = []
        tvm_ffi.structural_walk(s, (Call, lambda c: found.append(c)
                                    if op_name(c) == "tirx.call_ffi_kernel" else None))
        if found:
            raise NotImplementedError(f"{type(s).__name__} around a kernel launch in the host "
                                      f"function; only straight-line launches are supported")

    def param_index(self, handle_expr) -> int | None:
        """i such that the expr reads the data pointer of packed argument i, else None."""
        hits = []

        def visit(c):
            if op_name(c) == "tirx.tvm_struct_get" and c.args[0].same_as(self.args_var):
                hits.append(int(c.args[1]))
            elif op_name(c) == "tirx.tvm_struct_get" and isinstance(c.args[0], tirx.Var) \
                    and c.args[0] in self.lets:
                found = self.param_index(self.lets[c.args[0]])
                if found is not None:
                    hits.append(found)
        tvm_ffi.structural_walk(handle_expr, (Call, visit))
        return hits[0] if hits else None

    def buffer_arg(self, buf, depth: int = 0) -> tuple:
        """("param", i) or ("scratch", i): where the data of a host buffer comes from."""
        if buf in self.scratch:
            return ("scratch", self.scratch[buf])
        data = self.decls.get(buf)
        if data is None or depth > 32:
            raise NotImplementedError(f"kernel argument {buf.name}.data: buffer not declared "
                                      f"or allocated in the host function")
        if op_name(data) == "tirx.buffer_data":
            return self.buffer_arg(data.args[0], depth + 1)
        index = self.param_index(data)
        if index is None:
            raise NotImplementedError(f"kernel argument {buf.name}.data = {data}: not a "
                                      f"parameter's data pointer")
        return ("param", index)

    def launch(self, call) -> Launch:
        names = [str(p) for p in call.attrs.launch_params]
        args = list(call.args)
        symbol = str(args[0].value)
        kernel_args, extents = args[1:len(args) - len(names)], args[len(args) - len(names):]
        grid, block = [tirx.const(1, "int64")] * 3, [tirx.const(1, "int64")] * 3
        dyn_shared = None
        for name, extent in zip(names, extents):
            if name in _GRID:
                grid[_GRID[name]] = extent
            elif name in _BLOCK:
                block[_BLOCK[name]] = extent
            elif "dyn_shared" in name:
                dyn_shared = extent
            else:
                raise NotImplementedError(f"launch parameter {name!r} of {symbol}")
        out = []
        for a in kernel_args:
            if op_name(a) == "tirx.buffer_data":
                out.append(self.buffer_arg(a.args[0]))
            elif dtype_of(a) == "handle":
                raise NotImplementedError(f"pointer argument {a} of {symbol}")
            else:
                out.append((a, dtype_of(a)))
        return Launch(symbol, tuple(out), tuple(grid), tuple(block), dyn_shared)


def lower_to_opencl(mod: tvm.IRModule) -> OpenCLProgram:
    """The OpenCL C source and launch list of a scheduled IRModule {"main": func} (thread-bound
    TIR as apply_schedule returns it for a CUDA target)."""
    mod = _shared_dyn_to_shared(mod)  # a new module: its vars are the ones the host binds
    func = mod["main"]
    symbol = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs \
        else "main"
    params = _params(func)
    tgt = opencl_target()
    mod = tirx.transform.BindTarget(tgt)(mod)
    passes, _finalize_host, finalize_device = tvm.tirx.get_default_tir_pipeline(tgt)
    mod = passes(mod)
    host_mod, device_mods = split_host_device_mods(mod)
    sources = []
    for dev_tgt, dev_mod in device_mods.items():
        if len(dev_mod.functions):
            final = finalize_device()(dev_mod)
            sources.append(exact_float_literals(codegen_build(final, dev_tgt).inspect_source(),
                                                final))
    host_funcs = list(host_mod.functions.values())
    if len(host_funcs) != 1:
        raise NotImplementedError(f"{symbol}: expected one host function, got {len(host_funcs)}")
    walk = _HostWalk(host_funcs[0])
    if not walk.calls:
        raise ValueError(f"{symbol}: no kernel launch in the lowered host function; the schedule "
                         f"binds no blockIdx/threadIdx (it would run on the host)")
    launches = [walk.launch(c) for c in walk.calls]
    return OpenCLProgram(symbol, "\n".join(sources), params, launches, walk.scratch_list, walk.lets)


_LITERAL = re.compile(r"(?<![\w.])(\d\.\d{6}e[+-]\d{2,3})f")


def exact_float_literals(source: str, device_mod: tvm.IRModule) -> str:
    """The OpenCL C with every float32 literal written exactly (a hex float).

    TVM's OpenCL codegen prints float constants with 7 significant digits ("1.333522e-04f"),
    which does not round-trip a float32 (9 digits do): RoPE's inv_freq table came out up to
    5e-5 rad off at position 419, and the exp polynomials' coefficients move too. The CUDA
    codegen prints hex floats, so this is a difference of the checking path only: each printed
    literal is replaced by the one float32 constant of the device TIR that prints as it (left as
    printed if none or several do)."""
    exact: dict[str, set[float]] = {}

    def visit(node):
        if isinstance(node, tirx.FloatImm) and str(node.ty.dtype) == "float32":
            v = abs(float(np.float32(node.value)))
            exact.setdefault(f"{v:.6e}", set()).add(v)

    for func in device_mod.functions.values():
        tvm_ffi.structural_walk(func, visit)

    def replace(match):
        values = exact.get(match.group(1), set())
        return f"{float(next(iter(values))).hex()}f" if len(values) == 1 else match.group(0)

    return _LITERAL.sub(replace, source)
