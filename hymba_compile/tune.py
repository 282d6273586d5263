"""MetaSchedule over the kernels of a model's program: tune each (static sizes as they are,
symbolic ones bound to a representative prefill length), add the records to the target's JSON
database, then time each tuned kernel here against the hand-written default rule and check its
outputs against that rule's."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch
import tvm
from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from hymba_compile.schedules import named_target
from hymba_compile.schedules.tuned import apply_tuned, database_files

from .build import Kernel, build_kernel
from .errors import InputError
from .model import load_config, resolve_dtype
from .program_spec import ProgramSpec
from .targets import CPU_DECODE_BATCHES, CUDA_DECODE_BATCHES, is_cpu_target
from .tune_compare import compare
from .tune_db import check_database, default_database_dir, staged_database
from .program import program_kernels
from .tune_kernels import Workload, family, workloads
from .tune_measure import builder, physical_cores, runner, tuning_target

MS_LOGGER = "tvm.s_tir.meta_schedule"
INVALID_S = 1e9  # MetaSchedule records a failed candidate as 1e10 s


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Advances a tqdm bar by each batch of measured candidates."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results) -> None:
        self.bar.update(len(measure_candidates))


def _spec(model: str, target: str, dtype: str | None,
          decode_batches: tuple[int, ...] | None) -> tuple[ProgramSpec, tvm.target.Target]:
    config, _ = load_config(model)
    weight_dtype = str(resolve_dtype(dtype, config)).replace("torch.", "")
    try:
        tgt = named_target(target)
        batches = decode_batches or (CPU_DECODE_BATCHES if is_cpu_target(target)
                                     else CUDA_DECODE_BATCHES)
        return ProgramSpec(config, weight_dtype, tuple(batches)), tgt
    except ValueError as e:
        raise InputError(str(e)) from None


def select(kernels: list, families: list[str] | None, model: str) -> list:
    """The kernels of the listed families (all when None); InputError naming the program's
    families for a name that is not one."""
    known = sorted({family(f) for f in kernels})
    unknown = sorted(set(families or ()) - set(known))
    if unknown:
        raise InputError(f"unknown kernel famil{'ies' if len(unknown) > 1 else 'y'} "
                         f"{', '.join(unknown)}; the program of {model} has: {', '.join(known)}")
    return [f for f in kernels if families is None or family(f) in families]


def _record_count(database: ms.database.JSONDatabase) -> tuple[int, int]:
    """(records, valid records) in the database."""
    run = [r.run_secs for r in database.get_all_tuning_records()]
    valid = [s for s in run if s is not None and len(s) and float(s[0]) < INVALID_S]
    return len(run), len(valid)


def _best_ms(database: ms.database.JSONDatabase, w: Workload,
             target: tvm.target.Target) -> float | None:
    """The mean run time of the workload's best valid record, in ms (None if it has none)."""
    record = database.query_tuning_record(tvm.IRModule({"main": w.static}), target, "main")
    if record is None:
        return None
    secs = [float(s) for s in record.run_secs]
    return sum(secs) / len(secs) * 1e3


def _tune_one(w: Workload, database, work_dir: Path, target, trials: int, measure: dict,
              bar: tqdm) -> dict:
    """Tune one workload into `database`: its summary row (tuning part)."""
    row = {"family": w.family, "symbol": w.symbol, "sizes": w.sizes, "shapes": w.shapes(),
           # a kernel with a symbolic size is tuned at a static one: the program (symbolic)
           # never finds that record; it measures MetaSchedule against the hand rule
           "used_by_program": not w.sizes}
    before = _record_count(database)
    bar.set_postfix_str(w.symbol)
    logging.getLogger(MS_LOGGER).setLevel(logging.WARNING)  # console quiet; logs in work_dir
    t0 = time.perf_counter()
    try:
        ms.tune_tir(w.static, target, str(work_dir / w.symbol), max_trials_global=trials,
                    num_trials_per_iter=min(trials, 64), database=database,
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                       _Progress(bar)],
                    num_tuning_cores=physical_cores(), **measure)
    except (RuntimeError, ValueError, TypeError) as e:  # a kernel MetaSchedule cannot handle
        row["error"] = f"tuning failed: {str(e).strip().splitlines()[-1][:200]}"
    after = _record_count(database)
    row.update(trials=after[0] - before[0], valid_trials=after[1] - before[1],
               tuning_s=round(time.perf_counter() - t0, 1), best_ms=_best_ms(database, w, target))
    if "error" not in row and row["best_ms"] is None:
        row["error"] = "no candidate built and ran"
    return row


def _compare_row(w: Workload, target: str, folder: Path, device: torch.device) -> dict:
    """The default rule's time, the tuned kernel's time and their difference for one workload."""
    tgt = named_target(target)
    sch = apply_tuned(w.static, tgt, folder)
    if sch is None:
        return {"error": "the database has no valid record of it"}
    try:
        default = build_kernel(w.func, target)
    except ValueError as e:  # no default rule applies
        return {"error": f"default rule: {e}"}
    tuned = Kernel(w.symbol, "tuned", target, tvm.compile(sch.mod, target=tgt).mod)
    return compare(default, tuned, w.static, device)


def _local_device(target: str) -> torch.device | None:
    """Where this machine runs `target`'s kernels, None when it cannot."""
    if is_cpu_target(target):
        return torch.device("cpu")
    return torch.device("cuda") if torch.cuda.is_available() else None


def tune(model: str, target: str = "cpu", kernels: list[str] | None = None, trials: int = 32,
         out: str | Path | None = None, rpc_tracker: str | None = None,
         rpc_key: str | None = None, prefill_rows: int = 1152,
         echo: Callable[[str], object] = print, dtype: str | None = None,
         decode_batches: tuple[int, ...] | None = None) -> dict:
    """Tune the kernels of `model`'s program for `target` (those of the `kernels` families, or
    all) with `trials` MetaSchedule trials each, into the database folder `out` (default
    `tune_db.default_database_dir`), measuring through the RPC tracker `rpc_tracker` (HOST:PORT)
    with key `rpc_key` or here. Symbolic sizes take `prefill_rows` (batch counts 1).

    Returns {"model", "target", "database", ..., "kernels": [row per workload]}, a row holding
    family, symbol, sizes, shapes, trials, valid_trials, tuning_s, best_ms (the database's best
    record) and, measured here afterwards, default_ms, tuned_ms, speedup, max_abs_diff,
    max_rel_diff and ok (tuned outputs within 1e-4 of the default's largest |value|), or
    error. Nothing is written to the database unless every kernel's tuning has run."""
    if trials < 1 or prefill_rows < 1:
        raise InputError("--trials and --prefill-rows must be at least 1")
    spec, tgt = _spec(model, target, dtype, decode_batches)
    folder = Path(out).expanduser() if out is not None else default_database_dir(target)
    check_database(folder)
    device = _local_device(target)
    if device is None and rpc_tracker is None:
        raise InputError(f"no device here runs {target}: measure on RPC servers "
                         "(--rpc-tracker HOST:PORT --rpc-key KEY)")
    measure_runner = runner(rpc_tracker, rpc_key)
    chosen = select(program_kernels(spec, tgt), kernels, model)
    work = workloads(chosen, prefill_rows)
    measure = {"builder": builder(), "runner": measure_runner}
    where = f"RPC tracker {rpc_tracker} key {rpc_key}" if rpc_tracker else "this machine"
    echo(f"tuning {len(work)} distinct workloads of {len(chosen)} selected kernels of {model} "
         f"for {target}, {trials} trials each, measured on {where}; database {folder}")
    rows = []
    with staged_database(folder) as stage:
        database = ms.database.JSONDatabase(*map(str, database_files(stage)))
        ms_target = tuning_target(tgt)
        with tqdm(total=trials * len(work), desc="tuning", unit="trial") as bar:
            for i, w in enumerate(work, 1):
                rows.append(_tune_one(w, database, stage / "work", ms_target, trials, measure,
                                      bar))
                bar.update(max(0, i * trials - bar.n))  # a kernel that stopped short
    if device is not None:
        for w, row in zip(tqdm(work, desc="comparing", unit="kernel"), rows):
            if "error" not in row:
                row.update(_compare_row(w, target, folder, device))
    return {"model": model, "target": target, "weight_dtype": spec.weight_dtype,
            "database": str(folder), "trials_per_kernel": trials, "prefill_rows": prefill_rows,
            "measured_on": where, "kernels": rows}
