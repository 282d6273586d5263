"""Model scope of `explore`: whole-program fusion variants (`program_spec.FUSIONS`), each built
as a full program. Every variant is first checked on the tiny preset in fp32 against the eager
reference (prefill logits and 8 greedy decode steps); only a variant that passes is then built
for `--model` and timed end to end: decode tokens/s at batch 1 and 4, prefill tokens/s, with
the cold compile time (the Pareto plot's x).

Parity bound (fp32, tiny preset): max abs logit difference <= 1e-3 * max(1, max |logit|):
different summation orders through a few layers of fp32 (the default program: ~1e-5 here),
and identical greedy tokens.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..bench.model import _time_decode, _time_prefill
from ..cuda_compile import error_line
from ..errors import InputError
from ..program_spec import FUSIONS
from . import report

PARITY_RTOL = 1e-3
PARITY_STEPS = 8


def fusion_points(only: list[str] | None, target: str = "cpu") -> list[dict]:
    """The default program ({}), then each fusion variant's other values one at a time (a scan
    value that is what the target uses anyway is the default program: left out)."""
    from hymba_compile.schedules import named_target
    from hymba_compile.schedules.options import scan_algorithm

    same_as_default = {("scan", scan_algorithm(named_target(target)))}
    pts = [{}]
    for name, (_default, others) in FUSIONS.items():
        for value in others:
            if (name, value) in same_as_default:
                continue
            if only is None or f"{name}={value}" in only or name in only:
                pts.append({name: value})
    return pts


def _label(fusions: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in fusions.items()) or "default"


def parity(fusions: dict, target: str, cache: str, variants: dict | None = None) -> dict:
    """The variant on the tiny preset (fp32) against the eager reference (`variants`: the kernel
    choices, {} = the hand-written defaults)."""
    from .. import load

    ids = torch.tensor([[1, 7, 42, 3, 99, 5, 18, 250, 11, 64]])
    eager = load("tiny", backend="eager", dtype="float32")
    ours = load("tiny", dtype="float32", target=target, cache_dir=cache, fusions=fusions,
                decode_batches=(1,), progress=False, variants=variants or {})
    want_logits, _ = eager.backend.prefill(ids, None)
    got_logits, _ = ours.backend.prefill(ids, None)
    err = (got_logits.float() - want_logits.float()).abs().max().item()
    scale = max(1.0, want_logits.abs().max().item())
    same = torch.equal(ours.generate(ids, PARITY_STEPS, do_sample=False),
                       eager.generate(ids, PARITY_STEPS, do_sample=False))
    ok = err <= PARITY_RTOL * scale and same
    return {"parity_max_abs": err, "parity_scale": scale, "greedy_equal": same,
            "status": "ok" if ok else "wrong",
            **({} if ok else {"error": f"prefill logits differ by {err:.3g} (bound "
                                       f"{PARITY_RTOL * scale:.3g}), greedy equal: {same}"})}


def time_variant(fusions: dict, model: str, dtype: str, target: str, cache: str,
                 repeat: int, decode_steps: int, prefill_tokens: int,
                 variants: dict | None = None) -> dict:
    """Cold compile, then decode tok/s at batch 1 and 4 and prefill tok/s."""
    from .. import load

    t0 = time.perf_counter()
    m = load(model, dtype=dtype, target=target, cache_dir=cache, fusions=fusions,
             decode_batches=(1, 4), progress=False, variants=variants or {})
    compile_s = time.perf_counter() - t0
    backend, config = m.backend, m.config
    row = {"compile_s": round(compile_s, 1)}
    with torch.inference_mode():
        for batch in (1, 4):
            step = _time_decode(backend, config, batch, decode_steps, repeat)
            row[f"decode_b{batch}_tok_s"] = round(batch / step, 2)
        row["prefill_tok_s"] = round(prefill_tokens / _time_prefill(
            backend, config, prefill_tokens, repeat), 1)
    return row


def _copy_tuning_database(cache_root: Path, cache: Path, target: str) -> None:
    from hymba_compile.schedules.target import host_mcpu

    from ..choices import tuned_dir
    from ..targets import is_cpu_target

    mcpu = host_mcpu() if is_cpu_target(target) else None
    source = tuned_dir(cache_root, target, mcpu)
    if source.is_dir():
        shutil.copytree(source, tuned_dir(cache, target, mcpu))


def explore_model(model: str, dtype: str, target: str, out: Path, only: list[str] | None,
                  repeat: int, decode_steps: int, prefill_tokens: int,
                  cache_root: Path | None = None, echo=print) -> dict:
    """Build, check and time every fusion variant; write model.json / model.csv /
    model-pareto.png into `out`."""
    from tqdm import tqdm

    from ..targets import is_cpu_target

    if not is_cpu_target(target):
        raise InputError(f"model-scope explore runs the programs: {target} needs its GPU; "
                         f"build its variants with `compile --target {target}`")
    if min(repeat, decode_steps, prefill_tokens) < 1:
        raise InputError("--repeat, --decode-steps and --prefill-tokens must be at least 1")
    from ..model import load_config

    load_config(model)  # a missing model is one error here, not a failed row per variant
    pts = fusion_points(only, target)
    if len(pts) == 1 and only:
        raise InputError(f"no fusion variant matches {only}; known: " + ", ".join(
            f"{n}={v}" for n, (_, o) in FUSIONS.items() for v in o))
    # the hand-written defaults, then the kernel choices `explore` recorded for this machine
    # (their end-to-end effect), then each fusion variant over the defaults
    recorded = {}
    if cache_root is not None:
        from ..artifacts import target_choices

        recorded, _ = target_choices(cache_root, target)
    programs = [({}, {})] + ([({}, recorded)] if recorded else []) + [(f, {}) for f in pts[1:]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hymba-explore-") as cache, \
            tqdm(total=len(programs), desc="explore model", unit=" program") as bar:
        if recorded:  # a "tuned" choice reads the database beside the choices: copy it along
            _copy_tuning_database(cache_root, Path(cache), target)
        for fusions, variants in programs:
            label = _label(fusions) if not variants else "recorded kernel choices"
            bar.set_description(f"explore model: {label}")
            row = {"variant": label, "fusions": fusions, "model": model, "dtype": dtype,
                   "kernel_choices": {f: c.label() for f, c in variants.items()}}
            try:
                row.update(parity(fusions, target, cache, variants))
                if row["status"] == "ok":
                    row.update(time_variant(fusions, model, dtype, target, cache, repeat,
                                            decode_steps, prefill_tokens, variants))
            except Exception as e:  # noqa: BLE001  a failing variant is reported, not ranked
                row.update(status="failed", error=error_line(e)[:300])
            rows.append(row)
            bar.update()
    base = rows[0]
    for r in rows[1:]:
        for key in ("decode_b1_tok_s", "decode_b4_tok_s", "prefill_tok_s"):
            if r.get(key) and base.get(key):
                r[key.replace("_tok_s", "_vs_default")] = round(r[key] / base[key], 3)
    record = {"scope": "model", "model": model, "dtype": dtype, "target": target,
              "repeat": repeat, "decode_steps": decode_steps, "prefill_tokens": prefill_tokens,
              "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "model.json", record)
    report.write_csv_fields(out / "model.csv", rows, MODEL_FIELDS)
    report.plot_model(out / "model.png", rows, f"fusion variants, {model} {dtype} on {target}")
    report.print_model_table(rows, f"fusion variants: {model} {dtype} on {target}")
    echo(f"report -> {out}/model.json, model.csv, model.png")
    return record


MODEL_FIELDS = ("variant", "status", "parity_max_abs", "greedy_equal", "compile_s",
                "decode_b1_tok_s", "decode_b1_vs_default", "decode_b4_tok_s",
                "decode_b4_vs_default", "prefill_tok_s", "prefill_vs_default", "error")
