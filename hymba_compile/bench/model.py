"""`python -m hymba_compile bench model`: the whole model end to end (random weights), the
compiled program against the eager reference and torch.compile of it, in one run.

Per weight dtype (float32, bfloat16): decode tokens/s at batch 1 and 4 (medians over `repeat`
timed runs of `decode_steps` steps after a short prompt), the decode bound (bytes read per
step / the read bandwidth `peak_gbps` measured here, times the batch; the bandwidth is the best
of several streaming readers over buffers larger than the last-level cache, bench/bandwidth.py)
and each backend's fraction of it; prefill
tokens/s for a `prefill_tokens` prompt. Once: cold compile (into an empty cache folder), warm
load (cache hit + loading the library + binding the weights + the meta-token prefix; the weights
themselves are made before, as for every backend), peak memory of a process that loads and runs
the bf16 program (a child process, so the other backends do not count).

Decode bytes per step: every weight the step reads (all but the meta tokens; the tied
embedding is read whole by the lm_head GEMV), the cache slots the attention reads, and the conv
and SSM states read and written, per row.
"""

from __future__ import annotations

import copy
import gc
import json
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

import torch

from ..config import GLOBAL, HymbaConfig
from ..model import load_config
from ..reference import HymbaReference
from ..weights import random_parameters
from .bandwidth import peak_read_gbps, threads_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BATCHES = (1, 4)
DECODE_PROMPT = 16  # tokens of the prompt before decode is timed
BATCH_PREFILL = (4, (16, 128))  # batched prefill rows: 4 prompts of 16, then of 128 tokens
WARMUP_STEPS = 3


def _decode_bytes(config: HymbaConfig, weight_bytes: int, cache_itemsize: int, batch: int,
                  context: int) -> int:
    """Bytes one decode step reads at `context` real tokens (positions after the meta tokens)."""
    c = config
    slot = c.num_key_value_heads * (c.qk_head_dim + c.v_dim) * cache_itemsize
    cache = 0
    for p in c.layer_plan():
        if p.owns_kv:
            slots = (c.num_memory_tokens + context if p.attention == GLOBAL
                     else c.num_memory_tokens + min(context, c.sliding_window))
            cache += slots * slot
    states = c.num_hidden_layers * c.d_inner * (c.mamba_d_conv + c.mamba_d_state) * 4 * 2
    return weight_bytes + batch * (cache + states)


def _time_decode(backend, config: HymbaConfig, batch: int, steps: int, repeat: int) -> float:
    """Median seconds per decode step (batch rows per step) after a DECODE_PROMPT-token prompt."""
    g = torch.Generator().manual_seed(batch)
    samples = []
    for _ in range(repeat):
        ids = torch.randint(3, config.vocab_size, (batch, DECODE_PROMPT), generator=g)
        logits, state = backend.prefill(ids, None, last_only=True)
        tok = logits[:, -1].argmax(-1)
        for _ in range(WARMUP_STEPS):  # torch.compile compiles (twice) on its first steps
            tok = backend.decode(state, tok).argmax(-1)
        t0 = time.perf_counter()
        for _ in range(steps):
            tok = backend.decode(state, tok).argmax(-1)
        samples.append((time.perf_counter() - t0) / steps)
        del state
    return statistics.median(samples)


def _time_prefill(backend, config: HymbaConfig, tokens: int, repeat: int, batch: int = 1) -> float:
    """Median seconds of a prefill of `batch` prompts of `tokens` tokens (last logits only)."""
    g = torch.Generator().manual_seed(tokens)
    samples = []
    for _ in range(repeat):
        ids = torch.randint(3, config.vocab_size, (batch, tokens), generator=g)
        t0 = time.perf_counter()
        backend.prefill(ids, None, want_cache=False, last_only=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _batched_prefill_rows(label, side, config, dtype: str, repeat: int, emit) -> None:
    """Prefill tok/s of BATCH_PREFILL prompts: eager runs them as one batch; ours once with
    the program's batched prefill and once row after row (the same program, its batched
    functions not used), with the ratio of the two."""
    batch, lengths = BATCH_PREFILL
    for tokens in lengths:
        _batched_prefill_length(label, side, config, dtype, repeat, emit, batch, tokens)


def _batched_prefill_length(label, side, config, dtype, repeat, emit, batch, tokens) -> None:
    modes = [("batched", None)]
    if getattr(side, "prefill_sizes", None):
        modes.append(("row-by-row", []))
    rates = {}
    for mode, sizes in modes:
        saved = getattr(side, "prefill_sizes", None)
        if sizes is not None:
            side.prefill_sizes = sizes
        try:
            rates[mode] = batch * tokens / _time_prefill(side, config, tokens, repeat, batch)
        finally:
            if sizes is not None:
                side.prefill_sizes = saved
        row = _row(label, "prefill", batch, dtype, rates[mode])
        row.update(prompt_tokens=tokens, mode=mode if label == "tvm" else "batched")
        emit(row)
    if len(rates) == 2:
        emit({"metric": f"batched_prefill_speedup[{dtype},{tokens}]",
              "value": round(rates["batched"] / rates["row-by-row"], 3)})


def _peak_rss_child(model: str, cache_dir: str, prefill_tokens: int) -> float:
    """Peak RSS (GB) of a fresh process that loads the bf16 program and runs a prefill + decode."""
    code = f"""
import resource, torch, hymba_compile
m = hymba_compile.load({model!r}, backend="tvm", dtype="bfloat16", cache_dir={cache_dir!r},
                       decode_batches=(1, 4), progress=False)
ids = torch.randint(3, m.config.vocab_size, (1, {prefill_tokens}))
m.generate(ids, max_new_tokens=4)
try:  # VmHWM: this process's own high-water mark (ru_maxrss survives exec: the parent's)
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(hwm * 1024 / 1e9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


class _TorchCompiled:
    """The reference with its decode step under torch.compile (prefill stays eager: the
    reference's scan is a Python loop over tokens that dynamo would unroll)."""

    def __init__(self, reference: HymbaReference):
        self.reference = reference
        self._decode = torch.compile(reference.decode, dynamic=True)

    def check(self, config: HymbaConfig, atol: float) -> float:
        """Max abs difference of compiled vs eager decode logits over 3 steps from one prompt;
        raises if above `atol` (then its timings would not count)."""
        ids = torch.randint(3, config.vocab_size, (1, DECODE_PROMPT),
                            generator=torch.Generator().manual_seed(7))
        logits, state = self.reference.prefill(ids)
        twin = copy.deepcopy(state)
        tok, worst = logits[:, -1].argmax(-1), 0.0
        for _ in range(3):
            got, want = self._decode(state, tok), self.reference.decode(twin, tok)
            worst = max(worst, (got.float() - want.float()).abs().max().item())
            tok = want.argmax(-1)
        if worst > atol:
            raise RuntimeError(f"torch.compile decode differs from eager by {worst:.3g} > {atol}")
        return worst

    def prefill(self, *args, **kwargs):
        return self.reference.prefill(*args, **kwargs)

    def decode(self, state, tokens):
        return self._decode(state, tokens)


def _row(backend, phase, batch, dtype, tok_s, bound=None):
    row = {"backend": backend, "phase": phase, "batch": batch, "weight_dtype": dtype,
           "tok_s": round(tok_s, 3)}
    if bound is not None:
        row["bound_tok_s"] = round(bound, 3)
        row["frac_of_bound"] = round(tok_s / bound, 3)
    return row


def _print(row: dict) -> None:
    if "metric" in row:
        print(f"{row['metric']:>14}: {row['value']}", flush=True)
        return
    bound = (f"  bound {row['bound_tok_s']:8.2f}  = {100 * row['frac_of_bound']:5.1f}% of bound"
             if "bound_tok_s" in row else "")
    mode = f"  ({row['mode']}, {row['prompt_tokens']}-token prompts)" if "mode" in row else ""
    print(f"{row['backend']:>13} {row['phase']:7} b{row['batch']} {row['weight_dtype']:8} "
          f"{row['tok_s']:9.2f} tok/s{bound}{mode}", flush=True)


def run(model: str = "hymba-1.5b", repeat: int = 3, decode_steps: int = 16,
        prefill_tokens: int = 1024, json_out: str | None = None, torch_compile: bool = True,
        cache_dir: str | None = None) -> list[dict]:
    config, folder = load_config(model)
    if folder is not None:
        raise ValueError("bench model runs a preset with random weights (e.g. hymba-1.5b)")
    rows: list[dict] = []

    def emit(row):
        rows.append(row)
        _print(row)

    print(threads_line(), flush=True)
    peak, readers = peak_read_gbps()
    for reader, gbps in readers.items():
        emit({"metric": f"read_gbps[{reader}]", "value": gbps})
    emit({"metric": "peak_gbps", "value": round(peak, 2)})
    cache = cache_dir or tempfile.mkdtemp(prefix="hymba-bench-cache-")
    try:
        _run_dtypes(config, model, cache, peak, repeat, decode_steps, prefill_tokens,
                    torch_compile, emit)
        emit({"metric": "peak_rss_gb",
              "value": round(_peak_rss_child(model, cache, prefill_tokens), 2)})
    finally:
        if cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def _run_dtypes(config, model, cache, peak, repeat, decode_steps, prefill_tokens, torch_compile,
                emit) -> None:
    from ..model import compiled_backend  # noqa: PLC0415

    for name, dtype in DTYPES.items():
        params = random_parameters(config, seed=0, dtype=dtype)
        backend = compiled_backend(config, params, dtype, cache_dir=cache, decode_batches=BATCHES,
                                   progress=True, prefill_batches=(BATCH_PREFILL[0],))
        if name == "bfloat16":
            if backend.artifact.built_now:  # scheduling + LLVM + writing the library
                emit({"metric": "cold_compile_s", "value": round(backend.artifact.compile_s, 1)})
            del backend
            gc.collect()
            t0 = time.perf_counter()
            backend = compiled_backend(config, params, dtype, cache_dir=cache,
                                       decode_batches=BATCHES, progress=False,
                                       prefill_batches=(BATCH_PREFILL[0],))
            emit({"metric": "warm_load_s", "value": round(time.perf_counter() - t0, 2)})
        weight_bytes = backend.decode_weight_bytes
        reference = HymbaReference(config, params)
        sides = [("tvm", backend), ("eager", reference)]
        if torch_compile:
            compiled_ref = _TorchCompiled(reference)
            try:  # bf16 eager math differs run to run by its own rounding: compare loosely
                err = compiled_ref.check(config, 1e-3 if name == "float32" else 0.25)
                print(f"torch.compile decode vs eager ({name}): max abs {err:.3g}", flush=True)
                sides.append(("torch-compile", compiled_ref))
            except Exception as e:  # noqa: BLE001 - report why the rows are missing, go on
                print(f"torch.compile rows skipped ({name}): {type(e).__name__}: {e}"[:400],
                      flush=True)
        for label, side in sides:
            for b in BATCHES:
                try:
                    step = _time_decode(side, config, b, decode_steps, repeat)
                except Exception as e:  # noqa: BLE001 - torch.compile may fail on the reference
                    print(f"{label} decode b{b} {name}: failed ({type(e).__name__}: {e})"[:300])
                    continue
                # every backend keeps its caches in the weight dtype
                bound = b * peak * 1e9 / _decode_bytes(config, weight_bytes, dtype.itemsize, b,
                                                       DECODE_PROMPT + decode_steps // 2)
                emit(_row(label, "decode", b, name, b / step, bound))
            if label != "torch-compile":
                emit(_row(label, "prefill", 1, name,
                          prefill_tokens / _time_prefill(side, config, prefill_tokens, repeat)))
                _batched_prefill_rows(label, side, config, name, repeat, emit)
        del backend, reference, sides, params
        gc.collect()
