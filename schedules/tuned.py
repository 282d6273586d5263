"""Schedules found by MetaSchedule: the best measured record of a kernel's workload in a JSON
tuning database (the two files of `ms.database.JSONDatabase`, as `python -m hymba_compile tune`
writes them, one folder per target).

A workload is the PrimFunc as the builders of `ir/` make it (attributes included), so a kernel
finds its record only when it has exactly the sizes it was tuned at: a kernel with a symbolic row
count is tuned at a static count and its symbolic form has no record here."""

from __future__ import annotations

import functools
from pathlib import Path

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


def database_files(database_dir: str | Path) -> tuple[Path, Path]:
    """(workload file, tuning-record file) of a database folder."""
    folder = Path(database_dir)
    return folder / WORKLOAD_FILE, folder / RECORD_FILE


def open_database(database_dir: str | Path) -> ms.database.JSONDatabase | None:
    """The JSON database in `database_dir`, None when neither of its files is there; ValueError
    naming the folder when it is incomplete or unreadable."""
    workloads, records = database_files(database_dir)
    present = [p.name for p in (workloads, records) if p.is_file()]
    if not present:
        return None
    if len(present) == 1:
        raise ValueError(f"tuning database {database_dir} is incomplete: it has {present[0]} "
                         f"but not {({WORKLOAD_FILE, RECORD_FILE} - set(present)).pop()}")
    try:
        return ms.database.JSONDatabase(str(workloads), str(records), allow_missing=False)
    except (RuntimeError, ValueError) as e:  # TVM's parse errors (TVMError is a RuntimeError)
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise ValueError(f"tuning database {database_dir} is corrupt: {lines[-1]}") from None


@functools.lru_cache(maxsize=16)
def _cached(folder: str, stamp: tuple) -> ms.database.JSONDatabase | None:
    return open_database(folder)


def _stamp(folder: Path) -> tuple:
    """What identifies the database's current contents: size and mtime of both files."""
    stats = [p.stat() if p.is_file() else None for p in database_files(folder)]
    return tuple((s.st_size, s.st_mtime_ns) if s else None for s in stats)


def load_database(database_dir: str | Path) -> ms.database.JSONDatabase | None:
    """The database in `database_dir`, loaded once per folder and contents (None when the folder
    holds no database)."""
    folder = Path(database_dir).resolve()
    return _cached(str(folder), _stamp(folder))


def apply_tuned(func: tvm.tirx.PrimFunc, target: tvm.target.Target,
                database_dir: str | Path) -> s_tir.Schedule | None:
    """The schedule of `func`'s best valid record in the database of `database_dir`, None when
    the database (or the folder) does not have this workload."""
    database = load_database(database_dir)
    if database is None:
        return None
    return ms.tir_integration.compile_tir(database, func, target)
