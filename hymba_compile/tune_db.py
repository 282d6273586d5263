"""Where tuning records live and how a tuning run adds to them without ever leaving a database
half-written.

A database is a folder with MetaSchedule's two JSON-lines files (`schedules.tuned`), by default
`<cache>/tuned/<target name>/` (cpu-znver4, cuda-sm_90). A run works on a copy in a temporary
folder beside the destination and only when it is complete replaces the destination's files:
the workload file first (a superset of the old one with the old lines unchanged, so the old
records still point at the right lines), then the record file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from hymba_compile.schedules.target import host_mcpu
from hymba_compile.schedules.tuned import database_files, open_database

from .artifacts import default_cache_dir
from .choices import tuned_dir
from .errors import InputError


def default_database_dir(target: str, cache_root: Path | None = None) -> Path:
    """<cache>/tuned/<target key> (cpu-<mcpu>, cuda-sm_90), the cache by default
    `default_cache_dir()`: where explore and compile look for the target's records."""
    return tuned_dir(cache_root or default_cache_dir(), target,
                     host_mcpu() if target == "cpu" else None)


def check_database(folder: Path) -> None:
    """InputError unless `folder` holds a readable database or none (missing or empty)."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"tuning database {folder} is not a folder")
    try:
        open_database(folder)
    except ValueError as e:
        raise InputError(f"{e}; delete it or pass another --out") from None


@contextlib.contextmanager
def staged_database(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` holding a copy of its database; on success its files
    replace `folder`'s (workload file first), on error it is removed and `folder` is as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tuning-"))
    try:
        for src in database_files(folder):
            if src.is_file():
                shutil.copy2(src, stage / src.name)
        yield stage
        folder.mkdir(exist_ok=True)
        for src in database_files(stage):
            os.replace(src, folder / src.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
