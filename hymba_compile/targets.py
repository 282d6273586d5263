"""What the compiled backend can run on, and the refusal for the rest."""

from __future__ import annotations


def is_cpu_target(target: str) -> bool:
    return target == "cpu" or target.startswith("cpu:")


def gpu_program_refusal(target: str) -> str:
    """Why the whole-model program cannot be built for a GPU `target` yet, with the kernel
    layer's state from `schedules.coverage` (computed: about 7 s)."""
    from schedules.coverage import coverage, uncovered  # noqa: PLC0415

    try:
        gaps = uncovered(target)
        total = len(coverage(target))
    except ValueError as e:  # not a target name at all
        return str(e)
    if gaps:
        names = ", ".join(sorted({f"{c.family} ({c.builder})" for c in gaps}))
        kernels = f"{len(gaps)} of {total} kernel examples have no {target} schedule yet: {names}"
    else:
        kernels = f"every kernel has a {target} schedule ({total} of {total} examples, " \
                  "verified on OpenCL by the test suite)"
    return (f"target {target!r}: {kernels}; the whole-model program and its runtime run on "
            "the CPU only for now (use --target cpu)")
