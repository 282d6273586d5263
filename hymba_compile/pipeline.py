"""The Relax pipeline the program is compiled with, per target kind.

CPU: TVM's default. CUDA: TVM's CUDA pipeline (legalize, fuse the legalized glue, schedule it
with dlight, lower, plan memory, rewrite static regions into CUDA graphs), with one rule in front
of dlight's: `schedules.cuda.legalized.SymbolicElementwise`, for the glue whose extents are
symbolic (the prefill's [meta; prompt] key concat), which dlight's Fallback cannot split.
Our own kernels arrive scheduled and opaque (`program._Kernels`): nothing here touches them.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cuda import pipeline as cuda_pipeline
from tvm.s_tir import dlight

from hymba_compile.schedules.cuda.legalized import SymbolicElementwise

CUDA_GRAPH_CONFIG = "relax.backend.use_cuda_graph"


def _cuda_legalize_passes() -> list:
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        dlight.ApplyDefaultSchedule(
            SymbolicElementwise(),
            dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
            dlight.gpu.GeneralReduction(), dlight.gpu.Fallback(),
        ),
    ]


def relax_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """The Relax pass pipeline for `target` (see the module docstring)."""
    if target.kind.name != "cuda":
        return relax.get_default_pipeline(target)

    @tvm.transform.module_pass(opt_level=0, name="hymba_cuda_pipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                cuda_pipeline.library_dispatch_passes(target)
                + _cuda_legalize_passes()
                + cuda_pipeline.dataflow_lower_passes(target)
                + cuda_pipeline.finalize_passes(target))
            return seq(mod)

    return _pipeline


def lower_relax(mod: tvm.ir.IRModule, target: tvm.target.Target,
                cuda_graph: bool = True) -> tvm.ir.IRModule:
    """The module after our Relax pipeline (VM-ready): on CUDA, with `cuda_graph`, the static
    regions of each function lifted into CUDA-graph capture functions (Relax's
    RewriteCUDAGraph; the decode functions declare every argument static, `num_input` 0)."""
    config = {CUDA_GRAPH_CONFIG: bool(cuda_graph)} if target.kind.name == "cuda" else {}
    with tvm.transform.PassContext(opt_level=3, config=config):
        return relax_pipeline(target)(mod)


def compile_relax(mod: tvm.ir.IRModule, target: tvm.target.Target,
                  cuda_graph: bool = True) -> tuple[tvm.runtime.Executable, tvm.ir.IRModule]:
    """(executable, the lowered module it was built from: `program_report` reads its calls)."""
    lowered = lower_relax(mod, target, cuda_graph)
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(lowered, target=target, relax_pipeline=None), lowered
