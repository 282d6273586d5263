"""argparse value types shared by the commands of `python -m hymba_compile`."""

from __future__ import annotations

import argparse


def _int(text: str, minimum: int, what: str) -> int:
    """int(text), at least `minimum`, else an argparse error saying `what` was expected."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int(text, 0, "a non-negative integer")


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
