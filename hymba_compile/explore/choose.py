"""From the kernel-scope rows to the target's choices: per family (and per kernel, below), the
point that is correct and
no slower than the default on every case running that family, and fastest by the geometric
mean of its speed-up over the default across those cases. It replaces the default only when
that mean is at least `MIN_GAIN` (this shared 2-core machine's medians move by 1-3% between
runs: a smaller "gain" is noise), so a family keeps its hand-written default unless the machine
shows otherwise."""

from __future__ import annotations

import math
import os
import platform
import time

from ..choices import Choice

MIN_GAIN = 1.05


def _best(groups: dict, cases_of: dict) -> dict[str, dict]:
    """{group: best} over {(group, Choice): {case: gain | None}} by the rule of the module
    docstring."""
    best: dict[str, dict] = {}
    for (group, choice), per_case in groups.items():
        if set(per_case) != cases_of[group] or any(g is None for g in per_case.values()):
            continue  # failed, wrong or untimed somewhere: never chosen
        if min(per_case.values()) < 1.0:
            continue  # slower than the default on some case
        mean = math.exp(sum(math.log(g) for g in per_case.values()) / len(per_case))
        if mean >= MIN_GAIN and mean > best.get(group, {}).get("speedup", 0.0):
            best[group] = {"choice": choice, "speedup": round(mean, 3), "cases": sorted(per_case)}
    return best


def best_per_family(rows: list[dict]) -> dict[str, dict]:
    """{family or kernel symbol: {"choice": Choice, "speedup": geometric mean vs default,
    "cases": [...]}}: per family, the point at least as fast as the default on each of the
    family's cases and MIN_GAIN faster on their geometric mean; then per kernel (its global
    symbol: one static shape, e.g. gemv_b1_8960x1600_bfloat16) the same over the cases that run
    that kernel, among points without builder knobs (those change the kernel and its symbol),
    where it differs from its family's choice. The program looks a kernel up by symbol first."""
    groups: dict[tuple, dict] = {}
    cases_of: dict[str, set] = {}
    family_of_symbol: dict[str, str] = {}
    for r in rows:
        if r.get("variant") is None and not r.get("rule_knobs") and not r.get("builder_knobs"):
            continue  # the default point
        case = r["case"] + " | " + r["shape"]
        choice = Choice.from_json(r)
        gain = r.get("vs_default") if r.get("status") == "ok" else None
        keys = [r["family"]] + ([] if choice.builder_knobs else r.get("symbols", []))
        for key in keys:
            cases_of.setdefault(key, set()).add(case)
            groups.setdefault((key, choice), {})[case] = gain
        for symbol in r.get("symbols", []):
            family_of_symbol[symbol] = r["family"]
    best = _best(groups, cases_of)
    for symbol, family in family_of_symbol.items():
        if symbol in best and best.get(family, {}).get("choice") == best[symbol]["choice"]:
            del best[symbol]  # the family's choice already says it
        elif symbol in best:
            best[symbol]["family"] = family
    return best


def choices_record(best: dict[str, dict], target_name: str, mcpu: str | None) -> dict:
    """The JSON record of a choices file (choices.py) for what `best_per_family` found."""
    import torch

    return {"target": target_name, "mcpu": mcpu,
            "machine": {"processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "min_gain": MIN_GAIN,
            "families": {key: {**b["choice"].to_json(), "speedup": b["speedup"],
                               "cases": b["cases"], **({"family": b["family"]}
                                                       if "family" in b else {})}
                         for key, b in sorted(best.items())}}
