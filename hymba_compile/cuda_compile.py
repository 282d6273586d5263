"""Ahead-of-time CUDA for the ir/ kernels, no GPU needed: ONE CUDA C source for many scheduled
PrimFuncs (TVM's pipeline + CUDA codegen only; no nvcc/NVRTC per kernel), ONE nvcc call for a
multi-arch fatbin, and per-kernel resources (registers, shared memory, spills) from ptxas.

TVM names device kernels `<symbol>_kernel`, `<symbol>_kernel_1`, ... after the PrimFunc's global
symbol (characters outside [A-Za-z0-9_] become "_"); `lower_cuda` maps each one back to its
PrimFunc through the host function's launch calls rather than by name.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tvm
import tvm_ffi

from hymba_compile.ir.common import KERNEL_ATTR
from hymba_compile.schedules import named_target
from hymba_compile.schedules.target import CUDA_ARCHS

# nvcc warnings TVM's code triggers by the hundred: 177 unused variable (CSE leftovers), 1046
# float literal not exactly representable (TVM prints hex doubles with an 'f' suffix).
_QUIET = ["-diag-suppress=177,1046"]
_NAME = re.compile(r"^(?P<symbol>.+)_kernel(?:_\d+)?$")


class CudaCompileError(RuntimeError):
    """Lowering left kernels on the host or failed, or nvcc failed."""


# --------------------------------------------------------------------------- nvcc discovery

def find_nvcc() -> str | None:
    """nvcc on PATH, else the one in the pip package `nvidia-cuda-nvcc` (if installed)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for dist in ("nvidia-cuda-nvcc", "nvidia-cuda-nvcc-cu12"):
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            if f.name == "nvcc" and f.parent.name == "bin":
                path = Path(f.locate())
                if os.access(path, os.X_OK):
                    return str(path)
    return None


def _nvcc(nvcc: str | None) -> str:
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise CudaCompileError("nvcc not found (put it on PATH or pip install nvidia-cuda-nvcc)")
    return nvcc


@functools.lru_cache(maxsize=None)
def _ask(nvcc: str, flag: str) -> str:
    return subprocess.run([nvcc, flag], capture_output=True, text=True, check=True).stdout


def nvcc_version(nvcc: str | None = None) -> str:
    """E.g. "13.0.88" (from `nvcc --version`)."""
    out = _ask(_nvcc(nvcc), "--version")
    match = re.search(r"\bV(\d+(?:\.\d+)+)", out) or re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else out.strip().splitlines()[-1]


def supported_archs(nvcc: str | None = None) -> list[str]:
    """Those of CUDA_ARCHS this nvcc compiles for (`nvcc --list-gpu-arch`), in that order."""
    listed = set(_ask(_nvcc(nvcc), "--list-gpu-arch").split())
    return [a for a in CUDA_ARCHS if "compute_" + a[3:] in listed]


# --------------------------------------------------------------------------- TVM lowering

@dataclass
class DeviceCode:
    """The CUDA C of a set of PrimFuncs and where each device kernel came from."""

    source: str
    kernels: dict[str, str]         # device kernel -> PrimFunc symbol, in launch order
    families: dict[str, str]        # PrimFunc symbol -> family (the "hymba.kernel" attr)
    dynamic_shared: dict[str, int]  # device kernel -> dynamic shared bytes (-1: symbolic)
    host_only: list[str] = field(default_factory=list)    # symbols with code on the host
    failed: dict[str, str] = field(default_factory=dict)  # symbol -> TVM error (strict=False)


def _prim_func(key: str, item) -> tvm.tirx.PrimFunc:
    if isinstance(item, tvm.IRModule):
        names = [gv.name_hint for gv in item.functions]
        if "main" not in names and len(names) != 1:
            raise ValueError(f"{key}: the IRModule has no 'main' and several functions")
        item = item["main" if "main" in names else names[0]]
    attrs = item.attrs if item.attrs is not None else {}
    return item.with_attr("global_symbol", str(attrs["global_symbol"])
                          if "global_symbol" in attrs else key)


def _launches(host_func: tvm.tirx.PrimFunc) -> tuple[list[tuple[str, int]], bool]:
    """([(device kernel, dynamic shared bytes)], whether the host function computes itself)."""
    launches, host_compute = [], []

    def on_call(call):
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "tirx.call_ffi_kernel":
            params = [str(p) for p in call.attrs["launch_params"]] if call.attrs else []
            dyn = 0
            if params and params[-1] == "tirx.use_dyn_shared_memory":
                size = call.args[-1]
                dyn = int(size.value) if isinstance(size, tvm.tirx.IntImm) else -1
            launches.append((str(call.args[0].value), dyn))

    tvm_ffi.structural_walk(host_func.body, [
        (tvm.ir.Call, on_call),
        ((tvm.tirx.BufferStore, tvm.tirx.For), host_compute.append),
    ])
    return launches, bool(host_compute)


def error_line(e: Exception) -> str:
    """The exception's type and the last non-empty line of its message (TVM puts the reason
    last, after its backtrace)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def lower_cuda(funcs: dict, target="cuda:sm_90", strict: bool = True) -> DeviceCode:
    """Lower scheduled kernels ({name: IRModule with "main" | PrimFunc}) into ONE CUDA module.

    TVM's default TIR pipeline and CUDA codegen only: no host LLVM, no nvcc/NVRTC. A kernel that
    launches no device kernel, or also computes in its host function (loops not bound to
    blockIdx/threadIdx land there), raises CudaCompileError naming it. With strict=False it is
    listed in `host_only` instead, and kernels TVM fails to lower are left out and listed in
    `failed` (found by lowering them one at a time after the combined lowering failed)."""
    tgt = named_target(target) if isinstance(target, str) else target
    if tgt.host is None:
        tgt = tgt.with_host(tvm.target.Target("llvm"))
    prims = {}
    for key, item in funcs.items():
        func = _prim_func(key, item)
        symbol = str(func.attrs["global_symbol"])
        if symbol in prims:
            raise ValueError(f"two kernels share the global symbol {symbol!r}")
        prims[symbol] = func
    try:
        return _lower(prims, tgt, strict)
    except Exception:
        if strict or len(prims) < 2:
            raise
    failed = {}
    for symbol, func in prims.items():
        try:
            _lower({symbol: func}, tgt, strict=False)
        except Exception as e:  # noqa: BLE001 - reported per kernel
            failed[symbol] = error_line(e)
    code = _lower({s: f for s, f in prims.items() if s not in failed}, tgt, strict=False)
    code.failed = failed
    return code


def _lower(prims: dict[str, tvm.tirx.PrimFunc], tgt: tvm.target.Target,
           strict: bool) -> DeviceCode:
    mod = tvm.tirx.transform.BindTarget(tgt)(tvm.IRModule(prims))
    pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(tgt)
    build = importlib.import_module("tvm.tirx.build")  # `tvm.tirx.build` is also a function
    host, devices = build.split_host_device_mods(pipeline(mod))

    kernels, dynamic, host_only = {}, {}, []
    for gv, func in host.functions.items():
        symbol = gv.name_hint
        if symbol not in prims:
            continue
        launches, computes = _launches(func)
        if not launches or computes:
            host_only.append(symbol)
        for name, dyn in launches:
            match = _NAME.match(name)
            if not match or match["symbol"] != re.sub(r"\W", "_", symbol):
                raise CudaCompileError(f"device kernel {name!r} of {symbol!r} does not follow "
                                       f"TVM's '<symbol>_kernel[_N]' naming")
            kernels[name] = symbol
            if dyn:
                dynamic[name] = dyn
    seen = {gv.name_hint for gv in host.functions}
    host_only += [s for s in prims if s not in seen]
    if host_only and strict:
        raise CudaCompileError(
            "no (or not only) device code for: " + ", ".join(host_only) + ". Loops not bound to "
            "blockIdx/threadIdx land in the host (LLVM) module, where they would run on the CPU "
            "against device pointers; these kernels need a GPU schedule")
    if len(devices) > 1:
        raise CudaCompileError(f"expected one device target, got {list(devices)}")
    source = ""
    for dev_target, dev_mod in devices.items():
        source = build.codegen_build(finalize_device()(dev_mod), dev_target).inspect_source()
    defined = set(_launch_bounds(source))
    missing = [k for k in kernels if k not in defined]
    if missing:
        raise CudaCompileError(f"launched but not defined in the CUDA source: {missing}")
    families = {s: str(f.attrs[KERNEL_ATTR]) if KERNEL_ATTR in f.attrs else ""
                for s, f in prims.items()}
    return DeviceCode(source, kernels, families, dynamic, host_only)


def _launch_bounds(source: str) -> dict[str, int | None]:
    """{__global__ kernel defined in `source`: its __launch_bounds__ (None if absent)}."""
    return {m[2]: int(m[1]) if m[1] else None for m in re.finditer(
        r"__global__\s+void\s+(?:__launch_bounds__\((\d+)\)\s+)?(\w+)\s*\([^;{]*\)\s*\{", source)}


def device_source(funcs: dict, target="cuda:sm_90") -> str:
    """ONE CUDA C source holding every given kernel (see `lower_cuda`)."""
    return lower_cuda(funcs, target).source


# --------------------------------------------------------------------------- nvcc

@dataclass
class KernelResources:
    """What ptxas reports for one device kernel on one arch (bytes unless noted)."""

    kernel: str
    symbol: str
    arch: str
    registers: int = 0               # per thread
    shared_bytes: int = 0            # static __shared__ (dynamic shared is a launch parameter)
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0             # stack frame
    barriers: int | None = None
    max_threads: int | None = None   # __launch_bounds__ in the source


Usage = dict[str, dict[str, KernelResources]]  # {arch: {device kernel: resources}}


def _arch_number(arch: str) -> int:
    return int(re.fullmatch(r"sm_(\d+)[af]?", arch).group(1))


def _gencode(archs: list[str], shared_ptx: bool) -> list[str]:
    """One `-gencode` per arch, the newest also keeping its PTX (JIT on future GPUs); or, with
    shared_ptx, one PTX for the oldest arch assembled for every arch (and kept)."""
    if not archs:
        raise ValueError("no architectures given")
    ordered = sorted(archs, key=_arch_number)
    if shared_ptx:
        base = ordered[0][3:]
        return ["-gencode", f"arch=compute_{base},code=[{','.join(ordered)},compute_{base}]"]
    flags = []
    for arch in archs:
        num = arch[3:]
        code = f"[sm_{num},compute_{num}]" if arch == ordered[-1] else f"sm_{num}"
        flags += ["-gencode", f"arch=compute_{num},code={code}"]
    return flags


def _compile(src, kind: str, arch_flags: list[str], archs: list[str], out_path=None,
             nvcc: str | None = None, threads: int | None = None) -> tuple[bytes, Usage]:
    """One nvcc run with --resource-usage: (output bytes, resources per arch)."""
    source = src.source if isinstance(src, DeviceCode) else src
    with tempfile.TemporaryDirectory(prefix="hymba-nvcc-") as tmp:
        cu, out = Path(tmp, "kernels.cu"), Path(tmp, f"kernels.{kind}")
        cu.write_text(source)
        cmd = [_nvcc(nvcc), f"--{kind}", "-O3", *arch_flags, "--resource-usage", *_QUIET,
               "-t", str(threads or os.cpu_count() or 1), "-o", str(out), str(cu)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
            shown = "\n".join(errors[:40]) or proc.stderr[-4000:]
            raise CudaCompileError(f"nvcc failed for {', '.join(archs)} (exit {proc.returncode})"
                                   f":\n{shown}")
        data = out.read_bytes()
    if out_path is not None:
        Path(out_path).write_bytes(data)
    usage = {a: {} for a in archs}
    kernels = src.kernels if isinstance(src, DeviceCode) else None
    for r in parse_resource_usage(proc.stderr, source, kernels):
        usage.setdefault(r.arch, {})[r.kernel] = r
    return data, usage


def compile_with_resources(src: str | DeviceCode, archs: list[str], out_path=None,
                           nvcc: str | None = None, shared_ptx: bool = False,
                           threads: int | None = None) -> tuple[bytes, Usage]:
    """(fatbin, {arch: {device kernel: KernelResources}}) from ONE nvcc call: SASS for every
    arch plus PTX of the newest. shared_ptx=True runs the front end once (compute_<oldest>) and
    ptxas per arch: ~4x faster, but registers differ by a few from per-arch PTX (mostly sm_120).
    `threads` is nvcc's -t (archs compiled in parallel; default: all cores)."""
    return _compile(src, "fatbin", _gencode(archs, shared_ptx), archs, out_path, nvcc, threads)


def compile_fatbin(src: str | DeviceCode, archs: list[str], out_path=None,
                   nvcc: str | None = None, shared_ptx: bool = False) -> bytes:
    """One fatbin (SASS per arch + PTX of the newest) from one nvcc call; optionally written."""
    return compile_with_resources(src, archs, out_path, nvcc, shared_ptx)[0]


def resource_usage(src: str | DeviceCode, arch: str,
                   nvcc: str | None = None) -> dict[str, KernelResources]:
    """{device kernel: resources} on one arch (`nvcc -cubin -arch=sm_XX --resource-usage`)."""
    return _compile(src, "cubin", [f"-arch={arch}"], [arch], nvcc=nvcc)[1][arch]


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")


def parse_resource_usage(log: str, source: str = "",
                         kernels: dict[str, str] | None = None) -> list[KernelResources]:
    """KernelResources from ptxas's `--resource-usage` lines (any number of archs). `kernels`
    ({device kernel: symbol}) names the symbols; without it they come from the kernel name."""
    bounds = _launch_bounds(source)
    found, current, props = [], None, None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            name, match = m[1], _NAME.match(m[1])
            symbol = (kernels or {}).get(name) or (match["symbol"] if match else name)
            current = KernelResources(name, symbol, m[2], max_threads=bounds.get(name))
            found.append(current)
            props = None
        elif m := _PROPS.search(line):
            props = m[1]
        elif (m := _FRAME.search(line)) and current and props == current.kernel:
            current.stack_bytes, current.spill_store_bytes, current.spill_load_bytes = \
                map(int, m.groups())
        elif (m := _USED.search(line)) and current:
            if props != current.kernel:  # nvcc -t interleaving the per-arch logs
                raise CudaCompileError(f"ptxas output out of order at {current.kernel} "
                                       f"({current.arch}): {line.strip()}; retry with threads=1")
            current.registers = int(m[1])
            if b := re.search(r"used (\d+) barriers", line):
                current.barriers = int(b[1])
            if s := re.search(r"(\d+) bytes smem", line):
                current.shared_bytes = int(s[1])
    return found


def fatbin_entries(data: bytes) -> list[tuple[str, int]]:
    """[("sass" | "ptx", sm number)] in a fatbin, e.g. [("sass", 90), ("ptx", 120)].

    Reads the container's entry headers (magic 0xBA55ED50; entry kind 1 = PTX, 2 = ELF; the sm
    number at byte 28 of each entry header), what `cuobjdump --list-elf/--list-ptx` lists."""
    magic, _, header, size = struct.unpack_from("<IHHQ", data, 0)
    if magic != 0xBA55ED50:
        raise ValueError("not a CUDA fatbin")
    entries, off = [], header
    while off < header + size:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, off)
        sm = struct.unpack_from("<I", data, off + 28)[0]
        entries.append(({1: "ptx", 2: "sass"}.get(kind, str(kind)), sm))
        off += entry_header + payload
    return entries


# --------------------------------------------------------------------------- report

def resource_table(code: DeviceCode, usage: Usage) -> list[dict]:
    """JSON-ready rows, one per (device kernel, arch), in launch then arch order: symbol,
    family, kernel, arch, max_threads, registers, shared_bytes (static), dynamic_shared_bytes,
    spill_store_bytes, spill_load_bytes, stack_bytes, barriers. `usage` comes from
    compile_with_resources (or {arch: resource_usage(...)})."""
    order = {k: i for i, k in enumerate(code.kernels)}
    rows = []
    for arch_index, (arch, kernels) in enumerate(usage.items()):
        for name, r in kernels.items():
            row = asdict(r)
            row["symbol"] = code.kernels.get(name, r.symbol)
            row["family"] = code.families.get(row["symbol"], "")
            row["dynamic_shared_bytes"] = code.dynamic_shared.get(name, 0)
            rows.append((order.get(name, len(order)), arch_index, row))
    return [row for *_, row in sorted(rows, key=lambda t: t[:2])]


def format_table(rows: list[dict]) -> str:
    """resource_table rows as a plain-text table."""
    cols = [("kernel", "kernel"), ("family", "family"), ("arch", "arch"),
            ("max_threads", "threads"), ("registers", "regs"), ("shared_bytes", "smem"),
            ("dynamic_shared_bytes", "dyn smem"), ("spill_store_bytes", "spill st"),
            ("spill_load_bytes", "spill ld"), ("stack_bytes", "stack")]
    cells = [[head for _, head in cols]]
    cells += [["" if r[key] is None else str(r[key]) for key, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))) for row in cells)
