"""Run a CUDA-scheduled PrimFunc's numerics on the CPU: TVM's OpenCL codegen + pocl (pyopencl).

The scheduled TIR that the CUDA path compiles (thread bindings, shared memory, barriers) is
lowered for an OpenCL target instead, and the OpenCL C runs on pocl's CPU device; the same
program can run on the Oclgrind simulator, which reports data races, work-group divergence and
out-of-bounds accesses. Facts and traps: ../shared/docs/gpu-notes.md, section 1.

    kernel = build_pocl_kernel(rmsnorm(64, "float32"))   # apply_schedule for cuda:sm_90
    kernel(x, w, y)                                      # torch CPU tensors, params in order
    kernel.source, kernel.launches                       # OpenCL C; [(symbol, grid, block)]
    oclgrind_check(rmsnorm(16, "float32"), x, w, y)      # Oclgrind's report, "" when clean

Launch geometry comes from the lowered host function: each `call_ffi_kernel` gives the kernel's
symbol, its argument expressions and its grid/block extents, which are evaluated here in Python
after the PrimFunc's symbolic shape variables are bound from the tensors' shapes.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir.expr import Call, TensorLoad
from tvm.tirx.buffer import BufferType
from tvm.tirx.build import codegen_build, split_host_device_mods


def _pocl_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hymba_compile" / "pocl"


# pocl reads POCL_CACHE_DIR when its platform initialises (the first platform query of the
# process), so it is set on import, before pyopencl enumerates anything.
if "POCL_CACHE_DIR" not in os.environ:
    with contextlib.suppress(OSError):
        _pocl_cache_dir().mkdir(parents=True, exist_ok=True)
        os.environ["POCL_CACHE_DIR"] = str(_pocl_cache_dir())

OPENCL_TARGET = {"kind": "opencl", "thread_warp_size": 1, "max_num_threads": 1024,
                 "max_threads_per_block": 1024, "max_shared_memory_per_block": 49152}
PLATFORMS = {"pocl": "Portable Computing Language", "oclgrind": "Oclgrind"}
_GRID = {"blockIdx.x": 0, "blockIdx.y": 1, "blockIdx.z": 2}
_BLOCK = {"threadIdx.x": 0, "threadIdx.y": 1, "threadIdx.z": 2}
_TORCH_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                 torch.bfloat16: "bfloat16", torch.int64: "int64", torch.int32: "int32",
                 torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8",
                 torch.bool: "bool"}
# how a tensor of each dtype travels to the device: bf16 as its bits, bool as bytes
_STORAGE = {torch.bfloat16: torch.int16, torch.bool: torch.uint8}


# ----------------------------------------------------------------------------------------------
# availability and the OpenCL target
# ----------------------------------------------------------------------------------------------

def _find_device(platform: str = "pocl"):
    """The first device of the named pyopencl platform ("pocl" or "oclgrind"), or a reason str."""
    try:
        import pyopencl as cl
    except ImportError as e:
        return f"pyopencl is not installed ({e}); pip install pyopencl pocl-binary-distribution"
    try:
        platforms = cl.get_platforms()
    except Exception as e:  # pyopencl raises LogicError when no ICD is registered
        return f"no OpenCL platform found ({e}); pip install pocl-binary-distribution"
    wanted = PLATFORMS[platform]
    for p in platforms:
        if p.name.startswith(wanted):
            devices = p.get_devices()
            if devices:
                return devices[0]
    names = [p.name for p in platforms]
    package = "pocl" if platform == "pocl" else "oclgrind"
    return (f"no {wanted!r} OpenCL platform with a device (platforms: {names}); "
            f"pip install {package}-binary-distribution")


def pocl_unavailable_reason(platform: str = "pocl") -> str | None:
    """None when pyopencl and the platform's device (pocl's CPU device by default) are usable,
    else why not (for pytest skips)."""
    found = _find_device(platform)
    return found if isinstance(found, str) else None


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


def _dtype(expr) -> str:
    """The dtype of a scalar PrimExpr ("handle" for pointers)."""
    return str(getattr(expr.ty, "dtype", "handle"))


def _op_name(expr) -> str | None:
    return expr.op.name if isinstance(expr, Call) and hasattr(expr.op, "name") else None


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
            out.append(Param(var.name, _dtype(var), None, var))
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
        if _op_name(c) == "tirx.call_ffi_kernel":
            self.calls.append(c)

    def _no_launch_under(self, s):
        found = []
        tvm_ffi.structural_walk(s, (Call, lambda c: found.append(c)
                                    if _op_name(c) == "tirx.call_ffi_kernel" else None))
        if found:
            raise NotImplementedError(f"{type(s).__name__} around a kernel launch in the host "
                                      f"function; only straight-line launches are supported")

    def param_index(self, handle_expr) -> int | None:
        """i such that the expr reads the data pointer of packed argument i, else None."""
        hits = []

        def visit(c):
            if _op_name(c) == "tirx.tvm_struct_get" and c.args[0].same_as(self.args_var):
                hits.append(int(c.args[1]))
            elif _op_name(c) == "tirx.tvm_struct_get" and isinstance(c.args[0], tirx.Var) \
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
        if _op_name(data) == "tirx.buffer_data":
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
            if _op_name(a) == "tirx.buffer_data":
                out.append(self.buffer_arg(a.args[0]))
            elif _dtype(a) == "handle":
                raise NotImplementedError(f"pointer argument {a} of {symbol}")
            else:
                out.append((a, _dtype(a)))
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


def build_options() -> str:
    """OpenCL build options: `-cl-opt-disable` unless HYMBA_POCL_BUILD_OPTIONS says otherwise.

    pocl 3.0's optimiser miscompiles some work-group functions that hold barriers inside loops
    next to private arrays: the flash prefill kernel gave wrong rows when optimised, and the
    right ones unoptimised and on Oclgrind (which reported no race), at the same source. The
    check is of our TIR's semantics, not of pocl's optimiser, so it runs unoptimised."""
    return os.environ.get("HYMBA_POCL_BUILD_OPTIONS", "-cl-opt-disable")


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


# ----------------------------------------------------------------------------------------------
# a small evaluator of integer (and float) PrimExprs
# ----------------------------------------------------------------------------------------------

def _trunc_div(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cast(dtype: str, v):
    if dtype.startswith("float"):
        return float(v)
    if dtype == "bool":
        return bool(v)
    bits = int(re.sub(r"\D", "", dtype) or 64)
    v = int(v) & ((1 << bits) - 1)
    return v - (1 << bits) if dtype.startswith("int") and v >= 1 << (bits - 1) else v


_BINARY = {
    tirx.Add: lambda a, b: a + b, tirx.Sub: lambda a, b: a - b, tirx.Mul: lambda a, b: a * b,
    tirx.FloorDiv: lambda a, b: a // b, tirx.FloorMod: lambda a, b: a % b,
    tirx.Min: min, tirx.Max: max,
    tirx.EQ: lambda a, b: a == b, tirx.NE: lambda a, b: a != b, tirx.LT: lambda a, b: a < b,
    tirx.LE: lambda a, b: a <= b, tirx.GT: lambda a, b: a > b, tirx.GE: lambda a, b: a >= b,
    tirx.And: lambda a, b: bool(a and b), tirx.Or: lambda a, b: bool(a or b),
}
_CALLS = {
    "tirx.shift_left": lambda a, b: a << b, "tirx.shift_right": lambda a, b: a >> b,
    "tirx.bitwise_and": lambda a, b: a & b, "tirx.bitwise_or": lambda a, b: a | b,
    "tirx.bitwise_xor": lambda a, b: a ^ b, "tirx.likely": lambda a: a,
}


def evaluate(expr, env: dict, lets: dict | None = None):
    """The value (int, float or bool) of a PrimExpr, with vars from `env` (var -> value) or
    computed from `lets` (var -> expr, memoised into env)."""
    if isinstance(expr, (int, float)):
        return expr
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, tirx.FloatImm):
        return float(expr.value)
    if isinstance(expr, tirx.Var):
        if expr in env:
            return env[expr]
        if lets is not None and expr in lets:
            env[expr] = evaluate(lets[expr], env, lets)
            return env[expr]
        raise ValueError(f"unbound variable {expr.name!r} in a launch or allocation expression")
    ev = lambda e: evaluate(e, env, lets)  # noqa: E731
    kind = type(expr)
    if kind in _BINARY:
        return _BINARY[kind](ev(expr.a), ev(expr.b))
    if kind is tirx.Div:
        a, b = ev(expr.a), ev(expr.b)
        return a / b if isinstance(a, float) or isinstance(b, float) else _trunc_div(a, b)
    if kind is tirx.Mod:
        a, b = ev(expr.a), ev(expr.b)
        return math.fmod(a, b) if isinstance(a, float) else a - b * _trunc_div(a, b)
    if kind is tirx.Not:
        return not ev(expr.a)
    if kind is tirx.Select:
        return ev(expr.true_value) if ev(expr.condition) else ev(expr.false_value)
    if kind is tirx.Cast:
        return _cast(_dtype(expr), ev(expr.value))
    if kind is tirx.Let:
        return evaluate(expr.body, {**env, expr.var: ev(expr.value)}, lets)
    if kind in (tirx.BufferLoad, TensorLoad):  # env[("buffer", name)]: values read in an extent
        buffer = expr.buffer if kind is tirx.BufferLoad else expr.source
        name = str(buffer.name)
        if ("buffer", name) not in env:
            raise ValueError(f"buffer {name!r} is read in the expression; give its values")
        return env[("buffer", name)][tuple(ev(i) for i in expr.indices)]
    op = _op_name(expr)
    if op == "tirx.if_then_else":
        return ev(expr.args[1]) if ev(expr.args[0]) else ev(expr.args[2])
    if op in _CALLS:
        return _CALLS[op](*[ev(a) for a in expr.args])
    raise NotImplementedError(f"cannot evaluate {kind.__name__} {expr} on the host")


# ----------------------------------------------------------------------------------------------
# running on pocl / Oclgrind
# ----------------------------------------------------------------------------------------------

_CONTEXTS: dict[str, tuple] = {}


def _context(platform: str):
    """(context, queue) on the platform's first device, created once per process."""
    if platform not in _CONTEXTS:
        import pyopencl as cl
        if platform == "oclgrind":  # read when Oclgrind creates a context
            os.environ.setdefault("OCLGRIND_DATA_RACES", "1")
        device = _find_device(platform)
        if isinstance(device, str):
            raise RuntimeError(device)
        ctx = cl.Context([device])
        _CONTEXTS[platform] = (ctx, cl.CommandQueue(ctx))
    return _CONTEXTS[platform]


def _np_scalar(value, dtype: str):
    if dtype == "bool":
        return np.uint8(value)
    return np.dtype(dtype).type(value)


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else 1 if dtype == "bool" else np.dtype(dtype).itemsize


@contextlib.contextmanager
def _capture_fd2(enabled: bool, sink: list):
    """Redirect the process's stderr (fd 2, where Oclgrind reports) into `sink` while active."""
    if not enabled:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))


class PoclKernel:
    """A scheduled PrimFunc built for an OpenCL CPU platform; call it with torch CPU tensors
    (inputs, then outputs, in the PrimFunc's parameter order). Every parameter the device code
    stores into (outputs, and inputs updated in place such as caches and states) is copied back
    into its tensor. `.launches`: the program's Launch list (exprs) until the first call, then
    the (symbol, grid, block) of the last call's launches."""

    def __init__(self, program: OpenCLProgram, target: str, variant: str, platform: str = "pocl"):
        import pyopencl as cl
        self.program, self.target, self.variant, self.platform = program, target, variant, platform
        self.name = program.symbol
        self.source = program.source
        self.launches: list = list(program.launches)  # exprs until the first call
        self.diagnostics = ""  # Oclgrind's report of the last call ("" on pocl)
        self._ctx, self._queue = _context(platform)
        built = cl.Program(self._ctx, program.source).build(options=build_options())
        self._kernels = {s: cl.Kernel(built, s) for s in {ln.symbol for ln in program.launches}}

    def bind(self, tensors) -> dict:
        """var -> value for every symbolic var of the params, checked against the tensors."""
        params = self.program.params
        if len(tensors) != len(params):
            raise TypeError(f"{self.name} takes {len(params)} arguments "
                            f"({', '.join(p.name for p in params)}), got {len(tensors)}")
        env: dict = {}
        deferred = []
        for p, t in zip(params, tensors):
            if p.shape is None:
                env[p.var] = t.item() if isinstance(t, torch.Tensor) else t
                continue
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                raise TypeError(f"{self.name}: parameter {p.name!r} takes a CPU tensor, got "
                                f"{t.device if isinstance(t, torch.Tensor) else type(t)}")
            if _TORCH_DTYPES.get(t.dtype) != p.dtype:
                raise TypeError(f"{self.name}: parameter {p.name!r} is {p.dtype}, got a {t.dtype} "
                                f"tensor")
            if t.dim() != len(p.shape):
                raise ValueError(f"{self.name}: parameter {p.name!r} has {len(p.shape)} dims "
                                 f"{list(p.shape)}, got shape {tuple(t.shape)}")
            for axis, (dim, size) in enumerate(zip(p.shape, t.shape)):
                if isinstance(dim, tirx.Var) and dim not in env:
                    env[dim] = int(size)
                else:
                    deferred.append((p, axis, dim, int(size), tuple(t.shape)))
        for p, axis, dim, size, shape in deferred:
            want = evaluate(dim, env)
            if want != size:
                raise ValueError(f"{self.name}: parameter {p.name!r} dim {axis} must be {dim} = "
                                 f"{want} (from the other arguments), got shape {shape}")
        return env

    def __call__(self, *tensors):
        import pyopencl as cl
        env = self.bind(tensors)
        lets = self.program.lets
        mf = cl.mem_flags
        hosts, bufs = [], []
        for p, t in zip(self.program.params, tensors):
            if p.shape is None:
                hosts.append(None)
                bufs.append(None)
                continue
            host = t.detach().contiguous()
            arr = host.view(_STORAGE.get(host.dtype, host.dtype)).numpy()
            hosts.append((host, arr))
            if arr.nbytes == 0:
                bufs.append(cl.Buffer(self._ctx, mf.READ_WRITE, 1))
            else:
                bufs.append(cl.Buffer(self._ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=arr))
        scratch = []
        for s in self.program.scratch:
            count = math.prod(evaluate(d, env, lets) for d in s.shape)
            scratch.append(cl.Buffer(self._ctx, mf.READ_WRITE, max(1, count * _itemsize(s.dtype))))
        report: list = []
        done = []
        with _capture_fd2(self.platform == "oclgrind", report):
            for launch in self.program.launches:
                grid = [evaluate(e, env, lets) for e in launch.grid]
                block = [evaluate(e, env, lets) for e in launch.block]
                done.append((launch.symbol, tuple(grid), tuple(block)))
                if launch.dyn_shared is not None and evaluate(launch.dyn_shared, env, lets):
                    raise NotImplementedError(
                        f"{launch.symbol}: dynamic shared memory, which TVM's OpenCL codegen emits "
                        f"as a private array (wrong numbers); rewrite shared.dyn to shared first")
                if 0 in grid or 0 in block:
                    continue
                args = []
                for a in launch.args:
                    if a[0] == "param":
                        args.append(bufs[a[1]])
                    elif a[0] == "scratch":
                        args.append(scratch[a[1]])
                    else:
                        args.append(_np_scalar(evaluate(a[0], env, lets), a[1]))
                dims = max(i for i in range(3) if grid[i] > 1 or block[i] > 1 or i == 0) + 1
                glob = tuple(g * b for g, b in zip(grid[:dims], block[:dims]))
                self._kernels[launch.symbol](self._queue, glob, tuple(block[:dims]), *args)
            for p, t, hb, buf in zip(self.program.params, tensors, hosts, bufs):
                if p.written and hb is not None and hb[1].nbytes:
                    cl.enqueue_copy(self._queue, hb[1], buf)
            self._queue.finish()
        for p, t, hb in zip(self.program.params, tensors, hosts):
            if p.written and hb is not None and hb[0].data_ptr() != t.data_ptr():
                t.copy_(hb[0])
        self.launches = done
        self.diagnostics = "".join(report)
        return None


_CACHE: dict = {}


def build_pocl_kernel(func: tirx.PrimFunc, target: str = "cuda:sm_90", variant: str | None = None,
                      platform: str = "pocl") -> PoclKernel:
    """`func` scheduled as for `target` (schedules.apply_schedule, default or named variant),
    lowered to OpenCL and built on `platform` ("pocl", or "oclgrind": races and divergence
    reported in `.diagnostics` after each call). Cached per process."""
    from schedules import apply_schedule, named_target

    symbol = str(func.attrs["global_symbol"])
    key = (symbol, tvm_ffi.structural_hash(func), target, variant, platform)
    if key not in _CACHE:
        mod = apply_schedule(func, named_target(target), variant)
        _CACHE[key] = PoclKernel(lower_to_opencl(mod), target, variant or "default", platform)
    return _CACHE[key]


def oclgrind_check(func: tirx.PrimFunc, *tensors, target: str = "cuda:sm_90",
                   variant: str | None = None) -> str:
    """Run `func` once on the Oclgrind simulator (data-race detection on) with the tensors
    (updated in place) and return what Oclgrind reported ("" when clean). Tiny shapes only."""
    kernel = build_pocl_kernel(func, target, variant, platform="oclgrind")
    kernel(*tensors)
    return kernel.diagnostics
