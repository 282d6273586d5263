"""Build the program for a target and export it, with what the manifest records about it:
per kernel its family, schedule variant and device kernels (on CUDA: registers, shared memory,
spills per device kernel, from ptxas), and per function its kernel calls and GPU launches."""

from __future__ import annotations

import collections
import os
import re

import tvm
from tvm import tirx

from hymba_compile.ir.common import KERNEL_ATTR

from .choices import LIBRARY
from .pipeline import compile_relax
from .program import LIBRARY_ATTR, build_program
from .program_report import kernel_calls, launches
from .program_spec import ProgramSpec


def _kernel_table(mod: tvm.ir.IRModule, chosen: dict[str, str]) -> dict[str, dict]:
    """{function name in the module: family, variant}; keyed like the calls (the module's
    names, where "." of a global symbol became "_")."""
    table = {}
    for gv, func in mod.functions.items():
        symbol = str(func.attrs["global_symbol"]) if isinstance(func, tirx.PrimFunc) else None
        if symbol in chosen:
            table[gv.name_hint] = {"family": str(func.attrs[KERNEL_ATTR]),
                                   "variant": chosen[symbol]}
    library = mod.attrs[LIBRARY_ATTR] if mod.attrs and LIBRARY_ATTR in mod.attrs else {}
    for symbol, family in library.items():  # vendor-library calls: no PrimFunc in the module
        table[str(symbol)] = {"family": str(family), "variant": LIBRARY}
    return table


def build_and_export(spec: ProgramSpec, tgt: tvm.target.Target, target_name: str,
                     variants: dict[str, str] | None, library: str | os.PathLike,
                     cuda_graph: bool = True, on_kernel=None, on_stage=None,
                     tuned_dir=None) -> dict:
    """Build `spec` for `tgt`, export the library to `library`; the manifest's details."""
    stage = on_stage or (lambda _s: None)
    mod, chosen = build_program(spec, tgt, variants, on_kernel=on_kernel, tuned_dir=tuned_dir)
    stage(f"compiling {len(chosen)} kernels ({tgt.kind.name})")
    executable, lowered = compile_relax(mod, tgt, cuda_graph)
    kernels = _kernel_table(mod, chosen)
    calls = kernel_calls(lowered)
    details: dict = {"kind": tgt.kind.name, "functions": sorted(calls)}
    if tgt.kind.name == "cuda":
        from . import cuda_compile as cc  # noqa: PLC0415
        from .cuda_export import export_cuda_library  # noqa: PLC0415

        arch = str(tgt.attrs["arch"])
        stage(f"nvcc {arch}")
        report = export_cuda_library(executable, library, arch)
        # TVM names device kernels after the symbol with non-word characters as "_" (the
        # symbol ptxas's report gives, `r.symbol`): back to the module's function names
        by_kernel_name = {re.sub(r"\W", "_", gv.name_hint): gv.name_hint
                          for gv in lowered.functions}
        owner = {r.kernel: by_kernel_name.get(r.symbol, r.symbol) for r in report.resources}
        per_call = collections.Counter(owner.values())  # device kernels per PrimFunc call
        for r in report.resources:
            entry = kernels.setdefault(owner[r.kernel], {"family": "glue", "variant": "dlight"})
            entry.setdefault("device_kernels", []).append({
                "name": r.kernel, "registers": r.registers, "shared_bytes": r.shared_bytes,
                "spill_store_bytes": r.spill_store_bytes, "spill_load_bytes": r.spill_load_bytes,
                "stack_bytes": r.stack_bytes, "max_threads": r.max_threads})
        details.update({"arch": arch, "cuda_graph": bool(cuda_graph), "nvcc": cc.nvcc_version(),
                        "fatbin_bytes": report.fatbin_bytes,
                        "fatbin_entries": [f"{k}_{sm}" for k, sm in report.entries]})
    else:
        executable.export_library(str(library))
        per_call = None
    for symbol, entry in kernels.items():
        entry["calls"] = {f: c["direct"].get(symbol, 0) + c["graph"].get(symbol, 0)
                          for f, c in calls.items() if symbol in c["direct"] or symbol in c["graph"]}
    layers = spec.config.num_hidden_layers
    details["launches"] = {f: launches(c, per_call) for f, c in calls.items()}
    details["decode_launches_per_layer"] = {
        f: round(v["launches"] / layers, 2) for f, v in details["launches"].items()
        if f.startswith("decode_b")}
    details["kernels"] = kernels
    return details
