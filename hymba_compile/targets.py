"""Target names and devices: what the compiled backend is built for and runs on.

Imports no compiler module (the runtime-only load path uses it); the list of NVIDIA
architectures and target validation come from `schedules.target` when a compiler is there."""

from __future__ import annotations

import torch

from .errors import HymbaError

CPU_DECODE_BATCHES = (1, 2, 4, 8)
CUDA_DECODE_BATCHES = (1, 2, 4, 8, 16)


def is_cpu_target(target: str) -> bool:
    return target == "cpu" or target.startswith("cpu:")


def cuda_archs() -> list[str]:
    """The architectures `cuda:all` compiles: the project's list, limited to what the
    installed nvcc supports when it is there."""
    from hymba_compile.schedules.target import CUDA_ARCHS  # noqa: PLC0415

    from .cuda_compile import find_nvcc, supported_archs  # noqa: PLC0415

    return supported_archs() if find_nvcc() else list(CUDA_ARCHS)


def parse_targets(text: str) -> list[str]:
    """"cpu", "cuda:sm_90", a comma-separated list, or "cuda:all" -> validated target names."""
    from hymba_compile.schedules import named_target  # noqa: PLC0415

    names = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        expanded = [f"cuda:{a}" for a in cuda_archs()] if part == "cuda:all" else [part]
        for name in expanded:
            try:
                named_target(name)
            except ValueError as e:
                raise HymbaError(str(e)) from None
            if name not in names:
                names.append(name)
    if not names:
        raise HymbaError(f"no target in {text!r}")
    return names


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """A torch device from "cpu", "cuda", "cuda:N" (None stays None: choose automatically);
    HymbaError for anything else or a CUDA device that is not there."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise HymbaError(f"device {device!r}: {e}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise HymbaError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HymbaError(f"device {device!r}: torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}, CUDA build: "
                             f"{torch.version.cuda or 'no'})")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise HymbaError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA "
                             "devices")
        dev = torch.device("cuda", index)
    return dev


def device_target(device: torch.device) -> str:
    """The target name whose program runs on `device`: "cpu", or "cuda:sm_XY" from the GPU's
    compute capability (an H200 is sm_90)."""
    if device.type == "cpu":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(device)
    if major * 10 + minor < 75:
        raise HymbaError(f"{torch.cuda.get_device_name(device)} is sm_{major}{minor}; the CUDA "
                         "programs need sm_75 or newer (nvcc 13 dropped older architectures)")
    return f"cuda:sm_{major}{minor}"
