"""From the kernel-scope rows to the target's choices: per family, the point that is correct and
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


def best_per_family(rows: list[dict]) -> dict[str, dict]:
    """{family: {"choice": Choice, "speedup": geometric mean vs default, "cases": [...]}} for
    the families where some point is at least as fast as the default on each of the family's
    cases and MIN_GAIN faster on their geometric mean."""
    cases_of: dict[str, set] = {}
    speedups: dict[tuple, dict] = {}
    for r in rows:
        if r.get("variant") is None and not r.get("rule_knobs") and not r.get("builder_knobs"):
            continue  # the default point
        family = r["family"]
        cases_of.setdefault(family, set()).add(r["case"] + " | " + r["shape"])
        key = (family, Choice.from_json(r))
        gain = r.get("vs_default") if r.get("status") == "ok" else None
        speedups.setdefault(key, {})[r["case"] + " | " + r["shape"]] = gain
    best: dict[str, dict] = {}
    for (family, choice), per_case in speedups.items():
        if set(per_case) != cases_of[family] or any(g is None for g in per_case.values()):
            continue  # failed, wrong or untimed somewhere: never chosen
        if min(per_case.values()) < 1.0:
            continue  # slower than the default on some case
        mean = math.exp(sum(math.log(g) for g in per_case.values()) / len(per_case))
        if mean >= MIN_GAIN and mean > best.get(family, {}).get("speedup", 0.0):
            best[family] = {"choice": choice, "speedup": round(mean, 3),
                            "cases": sorted(per_case)}
    return best


def choices_record(best: dict[str, dict], target_name: str, mcpu: str | None) -> dict:
    """The JSON record of a choices file (choices.py) for what `best_per_family` found."""
    import torch

    return {"target": target_name, "mcpu": mcpu,
            "machine": {"processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "min_gain": MIN_GAIN,
            "families": {family: {**b["choice"].to_json(), "speedup": b["speedup"],
                                  "cases": b["cases"]}
                         for family, b in sorted(best.items())}}
