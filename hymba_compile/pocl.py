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
import tempfile
from pathlib import Path

import numpy as np
import torch
import tvm_ffi
from tvm import tirx

from .opencl_lower import OpenCLProgram, lower_to_opencl
from .tir_eval import evaluate


def _pocl_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hymba_compile" / "pocl"


# pocl reads POCL_CACHE_DIR when its platform initialises (the first platform query of the
# process), so it is set on import, before pyopencl enumerates anything.
if "POCL_CACHE_DIR" not in os.environ:
    with contextlib.suppress(OSError):
        _pocl_cache_dir().mkdir(parents=True, exist_ok=True)
        os.environ["POCL_CACHE_DIR"] = str(_pocl_cache_dir())

PLATFORMS = {"pocl": "Portable Computing Language", "oclgrind": "Oclgrind"}
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


def build_options() -> str:
    """OpenCL build options: `-cl-opt-disable` unless HYMBA_POCL_BUILD_OPTIONS says otherwise.

    pocl 3.0's optimiser miscompiles some work-group functions that hold barriers inside loops
    next to private arrays: the flash prefill kernel gave wrong rows when optimised, and the
    right ones unoptimised and on Oclgrind (which reported no race), at the same source. The
    check is of our TIR's semantics, not of pocl's optimiser, so it runs unoptimised."""
    return os.environ.get("HYMBA_POCL_BUILD_OPTIONS", "-cl-opt-disable")


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
                      platform: str = "pocl", knobs: dict | None = None) -> PoclKernel:
    """`func` scheduled as for `target` (schedules.apply_schedule, default or named variant with
    its rule `knobs`), lowered to OpenCL and built on `platform` ("pocl", or "oclgrind": races
    and divergence reported in `.diagnostics` after each call). Cached per process."""
    from hymba_compile.schedules import apply_schedule, named_target

    symbol = str(func.attrs["global_symbol"])
    key = (symbol, tvm_ffi.structural_hash(func), target, variant, platform,
           tuple(sorted((knobs or {}).items())))
    if key not in _CACHE:
        mod = apply_schedule(func, named_target(target), variant, knobs)
        _CACHE[key] = PoclKernel(lower_to_opencl(mod), target, variant or "default", platform)
    return _CACHE[key]


def oclgrind_check(func: tirx.PrimFunc, *tensors, target: str = "cuda:sm_90",
                   variant: str | None = None) -> str:
    """Run `func` once on the Oclgrind simulator (data-race detection on) with the tensors
    (updated in place) and return what Oclgrind reported ("" when clean). Tiny shapes only."""
    kernel = build_pocl_kernel(func, target, variant, platform="oclgrind")
    kernel(*tensors)
    return kernel.diagnostics
