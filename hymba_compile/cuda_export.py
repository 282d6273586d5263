"""Export a CUDA executable whose device code is an nvcc fatbin, compiled here, ahead of time.

Why: the TVM 0.27 wheel has no CUDA runtime linked on a machine without a driver, so its CUDA
codegen returns a placeholder module holding the CUDA C *source* (format "cuda"). Saved as is,
the library would JIT that source with NVRTC or nvcc every time it is loaded on the GPU host.
We instead compile the source with nvcc for the target's arch and put the fatbin into the
library, so loading needs neither.

How: `export_library` packs imported modules into one blob (`runtime.ModulePackImportsToTensor`,
layout in tvm-ffi `ProcessLibraryBin`): <nbytes u64> <indptr vec<u64>> <children vec<u64>>, then
per module <kind str> [<payload bytes>] ("_lib", the host code, has no payload). A CUDA module's
payload is <fmt str> <function map> <code bytes> (TVM `CUDAModuleNode::SaveToBytes`, mirrored by
its fallback). We rewrite fmt "cuda" -> "fatbin" and the code -> the fatbin; the function map is
kept byte for byte. `CUDAModuleNode` passes the code to cuModuleLoadData, which takes a fatbin.
Strings, bytes and vectors are a u64 length then the data (TVM's support::Stream).
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field

import tvm_ffi

from . import cuda_compile as cc


class _Reader:
    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset

    def u64(self) -> int:
        (value,) = struct.unpack_from("<Q", self.data, self.offset)
        self.offset += 8
        return value

    def raw(self) -> bytes:
        n = self.u64()
        out = self.data[self.offset:self.offset + n]
        if len(out) != n:
            raise ValueError("truncated module blob")
        self.offset += n
        return out

    def u64s(self) -> list[int]:
        n = self.u64()
        out = list(struct.unpack_from(f"<{n}Q", self.data, self.offset))
        self.offset += 8 * n
        return out


def _raw(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _u64s(values: list[int]) -> bytes:
    return struct.pack(f"<Q{len(values)}Q", len(values), *values)


def parse_blob(blob: bytes) -> tuple[list[int], list[int], list[tuple[str, bytes | None]]]:
    """(indptr, children, [(kind, payload or None for "_lib")]) of a packed-imports blob."""
    r = _Reader(blob)
    nbytes = r.u64()
    if nbytes != len(blob) - 8:
        raise ValueError(f"module blob says {nbytes} bytes, has {len(blob) - 8}")
    indptr, children = r.u64s(), r.u64s()
    modules = []
    for _ in range(len(indptr) - 1):
        kind = r.raw().decode()
        modules.append((kind, None if kind == "_lib" else r.raw()))
    return indptr, children, modules


def build_blob(indptr: list[int], children: list[int],
               modules: list[tuple[str, bytes | None]]) -> bytes:
    body = _u64s(indptr) + _u64s(children)
    for kind, payload in modules:
        body += _raw(kind.encode()) + (b"" if payload is None else _raw(payload))
    return struct.pack("<Q", len(body)) + body


def cuda_payload(payload: bytes) -> tuple[str, bytes, bytes]:
    """(fmt, function map bytes, code) of a CUDA module payload."""
    r = _Reader(payload)
    fmt = r.raw().decode()
    start = r.offset
    # the code is last, after the (small) map, whose own encoding is TVM's business: the first
    # offset whose u64 is exactly the length of the rest is the code's length prefix
    for end in range(start, len(payload) - 7):
        (n,) = struct.unpack_from("<Q", payload, end)
        if end + 8 + n == len(payload):
            return fmt, payload[start:end], payload[end + 8:]
    raise ValueError("unrecognised CUDA module payload")


def with_fatbin(payload: bytes, compile_source) -> tuple[bytes, str]:
    """The payload with its CUDA source replaced by compile_source(source) (a fatbin); returns
    (new payload, the source)."""
    fmt, fmap, code = cuda_payload(payload)
    if fmt != "cuda":
        raise ValueError(f"the CUDA module already holds {fmt!r} code, not source")
    source = code.decode()
    if "__global__" not in source:
        raise ValueError("the CUDA module's code is not CUDA C source")
    return _raw(b"fatbin") + fmap + _raw(compile_source(source)), source


_GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(")
_ERROR_LINE = re.compile(r"\.cu\((\d+)\)")


def failing_kernels(source: str, message: str) -> list[str]:
    """The device kernels whose bodies hold the source lines nvcc's errors point at."""
    starts = [(source.count("\n", 0, m.start()) + 1, m[1]) for m in _GLOBAL.finditer(source)]
    names = []
    for line in sorted({int(n) for n in _ERROR_LINE.findall(message)}):
        owner = [name for start, name in starts if start <= line]
        if owner and owner[-1] not in names:
            names.append(owner[-1])
    return names


@dataclass
class CudaExport:
    """What `export_cuda_library` compiled into the library."""

    arch: str
    fatbin_bytes: int = 0
    source: str = ""
    resources: list = field(default_factory=list)  # cuda_compile.KernelResources, this arch
    entries: list = field(default_factory=list)  # fatbin_entries: [("sass", 90), ("ptx", 90)]


def export_cuda_library(executable, path: str | os.PathLike, arch: str,
                        nvcc: str | None = None) -> CudaExport:
    """executable.export_library(path) with every CUDA module's source compiled by nvcc into a
    fatbin for `arch` (SASS, plus its PTX for newer GPUs) with ptxas resources recorded."""
    report = CudaExport(arch)

    def compile_source(source: str) -> bytes:
        try:
            data, usage = cc.compile_with_resources(source, [arch], nvcc=nvcc)
        except cc.CudaCompileError as e:
            names = failing_kernels(source, str(e))
            where = f" in {', '.join(names)}" if names else ""
            raise cc.CudaCompileError(f"{arch}{where}: {e}") from None
        report.fatbin_bytes += len(data)
        report.source += source
        report.resources += list(usage.get(arch, {}).values())
        report.entries += cc.fatbin_entries(data)
        return data

    def pack_imports(mod, is_system_lib, prefix, workspace_dir):
        tensor = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(mod)
        blob = bytes(tensor.numpy().tobytes())
        indptr, children, modules = parse_blob(blob)
        patched = [(kind, with_fatbin(payload, compile_source)[0] if kind == "cuda" else payload)
                   for kind, payload in modules]
        if not any(kind == "cuda" for kind, _ in modules):
            raise cc.CudaCompileError("the executable has no CUDA module to compile")
        blob = build_blob(indptr, children, patched)
        codegen_blob = tvm_ffi.get_global_func("codegen.codegen_blob")
        obj = codegen_blob(tvm_ffi.Bytes(blob) if hasattr(tvm_ffi, "Bytes") else blob,
                           is_system_lib, json.dumps({"kind": "llvm"}), prefix)
        out = os.path.join(str(workspace_dir), f"{prefix}devc.o")
        obj.write_to_file(out)
        return out

    executable.export_library(str(path), fpack_imports=pack_imports)
    return report


def library_blob(path: str | os.PathLike) -> bytes:
    """The packed-imports blob of an exported library, read from its symbol without loading
    any of its modules (works on a machine without the CUDA runtime)."""
    import ctypes  # noqa: PLC0415

    lib = ctypes.CDLL(os.path.abspath(path), mode=os.RTLD_LOCAL)
    name = tvm_ffi.get_global_func("runtime.ModuleImportsBlobName")() if \
        tvm_ffi.get_global_func("runtime.ModuleImportsBlobName", allow_missing=True) \
        else "__tvm_ffi__library_bin"
    address = ctypes.addressof(ctypes.c_char.in_dll(lib, str(name)))
    nbytes = struct.unpack("<Q", ctypes.string_at(address, 8))[0]
    return ctypes.string_at(address, 8 + nbytes)


def device_code(path: str | os.PathLike) -> list[tuple[str, bytes]]:
    """[(fmt, code)] of the CUDA modules inside an exported library."""
    _, _, modules = parse_blob(library_blob(path))
    return [cuda_payload(payload)[0::2] for kind, payload in modules if kind == "cuda"]

