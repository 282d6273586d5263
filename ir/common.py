"""Conventions shared by the builders: naming, the kernel-family attribute, dtype checks."""

from __future__ import annotations

from tvm import te, tirx

FLOAT_DTYPES = ("float32", "bfloat16")
KERNEL_ATTR = "hymba.kernel"


def check_dtype(dtype: str, allowed=FLOAT_DTYPES) -> str:
    if dtype not in allowed:
        raise ValueError(f"dtype {dtype!r} is not supported here; expected one of {allowed}")
    return dtype


def seq_var(name: str = "n") -> tirx.Var:
    """A symbolic int64 extent (sequence length, rows)."""
    return te.var(name, "int64")


def i64(v: int) -> tirx.PrimExpr:
    """A static extent as int64, so that buffers indexed by a symbolic (int64) row count use one
    index dtype throughout (schedules that remap buffer layouts require it)."""
    return tirx.const(v, "int64")


def finish(func: tirx.PrimFunc, kernel: str, symbol: str) -> tirx.PrimFunc:
    """Attach the family attribute, a unique global symbol and noalias."""
    return func.with_attr({KERNEL_ATTR: kernel, "global_symbol": symbol, "tirx.noalias": True})


def f32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """Cast an expression to float32 (no-op when it already is)."""
    return x if x.dtype == "float32" else tirx.Cast("float32", x)


def columns_of(columns: tuple[int, int] | None, width: int, what: str) -> tuple[int, int]:
    """(row width, offset) of a `width`-column input read from a wider buffer (default: the
    buffer is exactly those columns)."""
    if columns is None:
        return width, 0
    row, offset = columns
    if offset < 0 or offset + width > row:
        raise ValueError(f"{what}={columns}: columns [{offset}, {offset + width}) are outside a "
                         f"row of {row}")
    return row, offset
