"""What a compiled program launches: per Relax function, the PrimFunc calls it makes (directly
or inside the CUDA-graph capture functions that Relax's RewriteCUDAGraph lifted out of it), and
with the device kernels each PrimFunc launches (ptxas names them, `cuda_compile`), the GPU
launches of one call. Read from the
module after the Relax pipeline, where the calls are final (our kernels, the fused glue)."""

from __future__ import annotations

import collections

import tvm
import tvm_ffi
from tvm import relax, tirx

CAPTURE_SUFFIX = "_cuda_graph_capture"


def _calls(func: relax.Function) -> collections.Counter:
    """{callee GlobalVar name: calls} of a Relax function."""
    calls = collections.Counter()

    def on_call(call):
        if isinstance(call.op, tvm.ir.GlobalVar):
            calls[call.op.name_hint] += 1

    tvm_ffi.structural_walk(func.body, [(relax.Call, on_call)])
    return calls


def kernel_calls(lowered: tvm.ir.IRModule) -> dict[str, dict[str, dict[str, int]]]:
    """{function: {"direct": {symbol: calls}, "graph": {symbol: calls}}} for every public Relax
    function; "graph" holds the calls inside its CUDA-graph capture functions (replayed as one
    graph launch), "direct" the rest."""
    prims = {gv.name_hint for gv, f in lowered.functions.items() if isinstance(f, tirx.PrimFunc)}
    funcs = {gv.name_hint: f for gv, f in lowered.functions.items()
             if isinstance(f, relax.Function)}
    report = {}
    for name, func in funcs.items():
        if CAPTURE_SUFFIX in name or name == "cuda_graph_alloc":
            continue
        direct, graph = collections.Counter(), collections.Counter()
        for callee, n in _calls(func).items():
            if callee in prims:
                direct[callee] += n
        for capture, body in funcs.items():
            if capture.startswith(name + CAPTURE_SUFFIX):
                for callee, n in _calls(body).items():
                    if callee in prims:
                        graph[callee] += n
        report[name] = {"direct": dict(direct), "graph": dict(graph)}
    return report


def launches(calls: dict[str, dict[str, int]], per_call: dict[str, int] | None) -> dict:
    """Launches of one call of a function: {"kernels": PrimFunc calls, "launches": GPU kernel
    launches (PrimFunc calls when per_call is None: a CPU build), "in_graph": of which inside a
    CUDA graph}. A symbol missing from per_call launches nothing on the device (a view)."""
    def count(symbols: dict[str, int], weight) -> int:
        return sum(n * weight(s) for s, n in symbols.items())

    weight = (lambda _s: 1) if per_call is None else (lambda s: per_call.get(s, 0))
    direct, graph = calls["direct"], calls["graph"]
    return {"kernels": count(direct, lambda _s: 1) + count(graph, lambda _s: 1),
            "launches": count(direct, weight) + count(graph, weight),
            "in_graph": count(graph, weight)}
