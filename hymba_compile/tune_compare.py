"""A tuned kernel against the hand-written default rule on the same random inputs: time of each
(`bench.timing.median_ms`) and the largest difference of their outputs."""

from __future__ import annotations

import torch
from tvm import tirx

from .bench.timing import median_ms
from .build import Kernel

TOLERANCE = 1e-4  # of the largest |reference| value of a buffer (outputs are float32)


def random_args(func: tirx.PrimFunc, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """A tensor per parameter of the static `func`: floats standard normal, integers 1 (token
    ids, positions and counts of valid or padding keys: 1 is in range for each)."""
    gen = torch.Generator().manual_seed(seed)
    args = []
    for param in func.params:
        shape = [int(d) for d in param.shape]
        dtype = getattr(torch, str(param.dtype))
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=gen).to(dtype)
        else:
            t = torch.ones(shape, dtype=dtype)
        args.append(t.to(device))
    return args


def max_difference(ref: list[torch.Tensor], out: list[torch.Tensor]) -> tuple[float, float]:
    """(largest |ref - out|, relative: that over the buffer's largest |ref|) over all buffers."""
    worst_abs, worst_rel = 0.0, 0.0
    for r, o in zip(ref, out):
        diff = (r.double() - o.double()).abs().max().item() if r.numel() else 0.0
        scale = r.double().abs().max().item() if r.numel() else 0.0
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / scale if scale > 0 else float(diff > 0))
    return worst_abs, worst_rel


def compare(default: Kernel, tuned: Kernel, func: tirx.PrimFunc, device: torch.device) -> dict:
    """Times (ms) of the default and tuned kernels and the difference of every buffer after one
    call of each on copies of the same random arguments of the static `func`."""
    args = random_args(func, device)
    ref, out = [a.clone() for a in args], [a.clone() for a in args]
    default(*ref)
    tuned(*out)
    abs_diff, rel_diff = max_difference(ref, out)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    default_ms = median_ms(lambda: default(*ref), sync=sync)
    tuned_ms = median_ms(lambda: tuned(*out), sync=sync)
    return {"default_ms": default_ms, "tuned_ms": tuned_ms, "speedup": default_ms / tuned_ms,
            "max_abs_diff": abs_diff, "max_rel_diff": rel_diff, "ok": rel_diff <= TOLERANCE}
