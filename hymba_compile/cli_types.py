"""argparse value types shared by the commands of `python -m hymba_compile`."""

from __future__ import annotations

import argparse


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def batch_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(t) for t in text.replace(" ", "").split(",") if t}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,2,4, got {text!r}") from None
    from .program_spec import MAX_DECODE_BATCH

    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_DECODE_BATCH:
        raise argparse.ArgumentTypeError(f"decode batch sizes must be in 1..{MAX_DECODE_BATCH}, "
                                         f"got {text!r}")
    return sizes
