"""Vendor-library dispatch: the compute-bound prefill linears through torch's BLAS (oneDNN /
MKL / OpenBLAS on the CPU), as packed functions that the Relax program calls with
`call_dps_packed` (as MLC-LLM dispatches GEMMs to cuBLAS). Tensors cross by DLPack: no copy.

Each function computes what its ir/ twin computes, in fp32 with the weight widened to fp32:
- "hymba_compile.library.matmul"  (x [m, k] f32, w [n, k], y [m, n] f32): y = x @ f32(w)^T,
  twin `ir.linear.matmul`;
- "hymba_compile.library.gate_up" (x [m, k] f32, gate_w, up_w [f, k], h [m, f] f32):
  h = silu(x @ gate^T) * (x @ up^T), twin `ir.combine.gate_up_prefill`.
Variant name "library" (`choices.LIBRARY`), ranked by `explore` like any schedule variant.
CPU only: on CUDA torch would run on its own stream, outside TVM's stream and CUDA graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import tvm_ffi

FUNCS = {"matmul": "hymba_compile.library.matmul",
         "gate_up_matmul": "hymba_compile.library.gate_up"}


def _f32(w: torch.Tensor) -> torch.Tensor:
    return w if w.dtype == torch.float32 else w.to(torch.float32)


@tvm_ffi.register_global_func(FUNCS["matmul"], override=True)
def _matmul(x, w, y) -> None:
    xt, wt, yt = (torch.from_dlpack(t) for t in (x, w, y))
    torch.matmul(xt, _f32(wt).T, out=yt)


@tvm_ffi.register_global_func(FUNCS["gate_up_matmul"], override=True)
def _gate_up(x, gate_w, up_w, h) -> None:
    xt, gt, ut, ht = (torch.from_dlpack(t) for t in (x, gate_w, up_w, h))
    torch.matmul(xt, _f32(gt).T, out=ht)
    up = torch.matmul(xt, _f32(ut).T)
    F.silu(ht, inplace=True)
    ht.mul_(up)


def supports(family: str, target_name: str) -> bool:
    """Whether `family` has a library variant on the named target (CPU targets only)."""
    return family in FUNCS and target_name.split(":")[0] == "cpu"


class LibraryKernel:
    """A kernel family's library function, called like a compiled `build.Kernel`."""

    variant = "library"

    def __init__(self, family: str, name: str):
        import tvm

        self.family, self.name = family, name
        self._fn = tvm.get_global_func(name)

    def __call__(self, *args):
        return self._fn(*args)


def library_kernel(func, target_name: str) -> LibraryKernel:
    """The library function standing in for PrimFunc `func` on the named target; an error
    naming the family when it has none there."""
    from hymba_compile.schedules.registry import family_of

    family = family_of(func)
    if not supports(family, target_name):
        raise ValueError(f"no library variant for {family} on {target_name}: it exists for "
                         f"{sorted(FUNCS)} on CPU targets")
    return LibraryKernel(family, FUNCS[family])
