"""Benchmark cases per kernel family; each module defines `cases() -> list[KernelCase]`."""
