"""The kernel-scope run of `explore`: the selected cases and points (kernels.py), progress,
the choice per family (choose.py), and the files (report.py); the choices are recorded for the
target (choices.py) so that `compile` and `load` build with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..build import tuning_database
from ..choices import TUNED, choices_path, read_choices, tuned_dir, write_choices
from ..errors import InputError
from . import choose, report
from .cuda import explore_case_cuda
from .kernels import explore_case, known_families, select
from .space import points


def explore_kernels(target_name: str, out: Path, families: list[str] | None = None,
                    cases: list[str] | None = None, variants: list[str] | None = None,
                    repeat: int = 5, cache_root: Path | None = None, record: bool = True,
                    echo: Callable[[str], None] = print) -> dict:
    """Explore, write the report files into `out`, record the choices (unless `record` is
    False); returns the JSON record."""
    from tqdm import tqdm

    from hymba_compile.schedules import named_target
    from hymba_compile.schedules.target import host_mcpu, is_cpu

    try:
        target = named_target(target_name)
    except ValueError as e:
        raise InputError(str(e)) from None
    cpu = is_cpu(target)
    if cpu and target_name.startswith("cpu:") and target_name != f"cpu:{host_mcpu()}":
        raise InputError(f"kernel-scope explore times on this machine, a {host_mcpu()}: "
                         f"{target_name} cannot be measured here (use --target cpu)")
    known = known_families()
    unknown = sorted(set(families or []) - set(known))
    if unknown:
        raise InputError(f"unknown kernel famil{'ies' if len(unknown) > 1 else 'y'} "
                         f"{', '.join(unknown)}; known: {', '.join(known)}")
    selected = select(families, cases)
    if not selected:
        raise InputError(f"no kernel bench case matches --kernels {families} --cases {cases}")
    _check_variants(variants, selected, target, target_name)
    total = sum(len(points(f, target, target_name, variants)) - 1 for cf in selected
                for f in cf.families) + len(selected)
    rows: list[dict] = []
    database = tuned_dir(cache_root, target_name, host_mcpu() if cpu else None) \
        if cache_root is not None else None
    with tqdm(total=total, desc="explore", unit=" point") as bar, tuning_database(database):
        for cf in selected:
            bar.set_description(f"explore {cf.case.name}")
            if cpu:
                rows += explore_case(cf, target, target_name, repeat, variants,
                                     on_row=lambda _: bar.update())
            else:
                rows += explore_case_cuda(cf, target, target_name, variants,
                                          on_row=lambda _: bar.update())
    if not cpu:
        return _cuda_report(rows, target_name, out, echo)
    best = choose.best_per_family(rows)
    for r in rows:  # the point chosen for the row's family or for one of its kernels
        picks = [best[k]["choice"].label() for k in [r["family"], *r.get("symbols", [])]
                 if k in best]
        r["chosen"] = r["choice"] in picks
    mcpu = host_mcpu()
    choices = choose.choices_record(best, target_name, mcpu)
    record_json = {"scope": "kernels", "target": target_name, "mcpu": mcpu, "repeat": repeat,
                   "machine": choices["machine"], "choices": choices["families"], "rows": rows}
    title = f"explore {target_name} ({mcpu}, {choices['machine']['cpus']} CPUs)"
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "explore.json", record_json)
    report.write_csv(out / "explore.csv", rows)
    report.plot_variants(out / "variants.png", rows, title)
    report.plot_pareto(out / "pareto.png", rows, title)
    report.print_table(rows, title)
    for family, b in sorted(best.items()):
        echo(f"best {family}: {b['choice'].label()} ({b['speedup']:.2f}x the default)")
    if not best:
        echo(f"no point beat a default by {choose.MIN_GAIN:.2f}x: the defaults stand")
    if record and cache_root is not None:
        path = choices_path(cache_root, target_name, mcpu)
        covered = fully_covered(selected) if variants is None else set()
        read_choices(path)  # a corrupt file is one error, before anything is written
        kept = json.loads(path.read_text())["families"] if path.exists() else {}

        def family(key: str, entry: dict) -> str:  # a family, or the family of a kernel key
            return entry.get("family", key)
        # only families measured on all their cases (and their kernels' entries) are replaced
        merged = {**{k: e for k, e in kept.items() if family(k, e) not in covered},
                  **{k: e for k, e in choices["families"].items() if family(k, e) in covered}}
        write_choices(path, {**choices, "families": merged})
        partial = sorted({f for cf in selected for f in cf.families} - covered)
        echo(f"choices for {target_name} ({mcpu}) -> {path}" + (
            f"; not recorded (measured on part of their cases or variants): {', '.join(partial)}"
            if partial else ""))
    echo(f"report -> {out}/explore.json, explore.csv, variants.png, pareto.png")
    return record_json


def fully_covered(selected: list) -> set[str]:
    """The families whose every bench case is among `selected`."""
    everywhere: dict[str, set] = {}
    for cf in select(None, None):
        for f in cf.families:
            everywhere.setdefault(f, set()).add((cf.case.name, cf.case.shape))
    here: dict[str, set] = {}
    for cf in selected:
        for f in cf.families:
            here.setdefault(f, set()).add((cf.case.name, cf.case.shape))
    return {f for f, cases in here.items() if cases == everywhere.get(f)}


def _check_variants(variants: list[str] | None, selected: list, target, target_name: str):
    """InputError naming any --variants name that no selected family has on the target."""
    if not variants:
        return
    names = {TUNED}
    for cf in selected:
        for family in cf.families:
            names.update(c.variant for c in points(family, target, target_name) if c.variant)
    unknown = sorted(set(variants) - names)
    if unknown:
        raise InputError(f"unknown schedule variant{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)} for the selected kernels; known: "
                         f"{', '.join(sorted(names))}")


def _cuda_report(rows: list[dict], target_name: str, out: Path, echo) -> dict:
    """A CUDA target without its GPU: resources and the pocl check per point; no timing, so
    nothing is ranked or recorded."""
    record = {"scope": "kernels", "target": target_name, "timing": "needs a device",
              "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "explore.json", record)
    report.write_csv_fields(out / "explore.csv", rows, report.CUDA_FIELDS)
    report.plot_resources(out / "resources.png", rows, f"explore {target_name} (no GPU)")
    report.print_cuda_table(rows, f"explore {target_name}: built and checked on pocl; "
                                  f"timing needs a device")
    bad = [r for r in rows if r["status"] != "built"]
    echo(f"{len(rows) - len(bad)} of {len(rows)} points built and matched the CPU build on "
         f"pocl; nothing recorded as {target_name}'s choices (timing needs the GPU)")
    echo(f"report -> {out}/explore.json, explore.csv, resources.png")
    return record
