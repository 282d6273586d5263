"""The device check: `bench/gpu_check.sh` runs this on a GPU machine from the bundle that
`bench/gpu_bundle.sh` builds (runtime-only TVM, prebuilt sm_90 programs, no network).

    python -m hymba_compile.bench.gpu_check --bundle DIR [--device cuda|cpu] [--json FILE]

Sections, each written to the JSON as soon as it is measured (a timeout keeps what was done):
  bound     device-to-device copy bandwidth (bytes read + written), the HBM bound of the run
  fixture   the official tiny checkpoint: compiled fp32 vs the official output (prefill logits,
            greedy ids), compiled bf16 vs the eager reference in bf16 on the same device
  model     hymba-1.5b random bf16 weights: compiled vs the eager reference (bf16) on the device
  decode    tok/s at batch 1, 4, 16 (CUDA graph), batch 1 without the graph; of the bound
  prefill   tok/s at 1k and 4k tokens
  kernels   per-kernel GPU times of one decode step and one 4k prefill (torch.profiler, CUPTI),
            by family, against torch at the same shapes (F.linear, SDPA, the eager scan loop)
  launches  per decode step and per layer, from the manifest
On `--device cpu` (the CPU twin, to check the bundle here) only bound, fixture and a short decode
run; `--all-sections --model tiny` runs every section on the CPU with the tiny preset, to try the
script without a GPU (tests/test_gpu_check.py). Figures are medians of `--repeat` runs. Exit
status 1 when a section failed or the fixture parity misses its bound (`verdict`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ..artifact_info import BF16_DOT, linear_numerics
from ..config import preset
from ..model import HymbaModel, compiled_backend, load
from ..reference import HymbaReference, selective_scan
from ..weights import load_parameters, random_parameters
from .timing import median_ms

DECODE_STEPS = 32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_s(fn, device, repeat: int) -> float:
    """timing.median_ms of fn on `device` (synchronised), in seconds."""
    return median_ms(fn, repeat=repeat, sync=lambda: _sync(device)) / 1e3


def copy_bandwidth(device: torch.device, repeat: int) -> dict:
    """Device-to-device copy GB/s of a buffer far larger than the last-level cache (bytes read
    plus written)."""
    n = (1 << 30) if device.type == "cuda" else (1 << 28)  # 1 GiB on a GPU, 256 MiB on a CPU
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    s = _median_s(lambda: dst.copy_(src), device, max(repeat, 5))
    return {"gbps": round(2 * n / s / 1e9, 1), "buffer_bytes": n}


def _fixture(bundle: Path) -> tuple[Path, dict]:
    from safetensors.torch import load_file  # noqa: PLC0415

    folder = bundle / "fixtures" / "official-tiny"
    return folder, load_file(str(folder / "expected.safetensors"))


def _greedy(backend, ids: torch.Tensor, steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy ids and the logits that chose them (row 0 from the prefill), without EOS stops."""
    with torch.inference_mode():
        logits, state = backend.prefill(ids, last_only=True)
        step = logits[:, -1]
        chosen, seen = [], [step]
        for _ in range(steps):
            tok = step.argmax(-1)
            chosen.append(int(tok[0]))
            if len(chosen) == steps:
                break
            step = backend.decode(state, tok)
            seen.append(step)
    return chosen, seen


def check_fixture(bundle: Path, programs: Path, device: torch.device) -> dict:
    """Compiled fp32 vs the official output (prefill logits, greedy ids and their logits);
    compiled bf16 vs the eager reference in bf16 on the same device."""
    folder, expected = _fixture(bundle)
    ids = expected["input_ids"].long()
    want_ids = expected["greedy_ids"].long().tolist()
    out = {}
    fp32 = load(folder, dtype="float32", cache_dir=programs, device=device, decode_batches=(1,),
                progress=False)
    logits = fp32.logits(ids)
    out["fp32_prefill_max_abs_vs_official"] = (logits - expected["prefill_logits"].float()
                                               ).abs().max().item()
    got, step_logits = _greedy(fp32.backend, ids, len(want_ids))
    out["fp32_decode_max_abs_vs_official"] = max(
        (a[0] - b).abs().max().item() for a, b in zip(step_logits, expected["decode_logits"]))
    out["fp32_greedy_ids_equal_official"] = got == want_ids
    out["logit_scale"] = expected["prefill_logits"].abs().max().item()
    bf16 = load(folder, dtype="bfloat16", cache_dir=programs, device=device, decode_batches=(1,),
                progress=False)
    params = {k: v.to(device) for k, v in load_parameters(folder, bf16.config,
                                                          torch.bfloat16).items()}
    with torch.inference_mode():
        # the same bf16 weights, the reference computing in fp32 (our activations are fp32) and
        # in bf16 (the official bf16 model's activations): the second shows bf16's own error
        ref32, _ = HymbaReference(bf16.config, {k: v.float() for k, v in params.items()}
                                  ).prefill(ids.to(device), want_cache=False)
        ref16, _ = HymbaReference(bf16.config, params).prefill(ids.to(device), want_cache=False)
    got_logits = bf16.logits(ids)
    ref32, ref16 = ref32.float().cpu(), ref16.float().cpu()
    out["bf16_prefill_max_abs_vs_eager_fp32_same_weights"] = (got_logits - ref32).abs().max().item()
    out["bf16_prefill_max_abs_vs_eager_bf16"] = (got_logits - ref16).abs().max().item()
    out["eager_bf16_vs_eager_fp32_max_abs"] = (ref16 - ref32).abs().max().item()
    out["bf16_greedy_ids_equal_official"] = _greedy(bf16.backend, ids, len(want_ids))[0] == want_ids
    out["bf16_linears"] = linear_numerics(bf16.backend)  # from the program's manifest
    return out



def _follow(backend, reference, ids: torch.Tensor, steps: int, device) -> dict:
    """Compiled vs the reference from the prompt `ids`, then `steps` decode steps both fed the
    reference's greedy tokens: per step (the prefill first) the max abs logit difference and
    whether the argmax agrees; the global-cache capacities the compiled state went through; the
    prefill's logit scale."""
    got, state = backend.prefill(ids, last_only=True)
    want, ref_state = reference.prefill(ids.to(device), last_only=True)
    got, want = got[:, -1], want.float().cpu()[:, -1]
    caps, scale, steps_seen = {state.capacity}, want.abs().max().item(), [(got, want)]
    for _ in range(steps):
        tok = want.argmax(-1)
        got = backend.decode(state, tok)
        want = reference.decode(ref_state, tok.to(device)).float().cpu()
        caps.add(state.capacity)
        steps_seen.append((got, want))
    errs = [(g - w).abs().max().item() for g, w in steps_seen]
    same = [bool(g.argmax(-1).eq(w.argmax(-1)).all()) for g, w in steps_seen]
    return {"errs": errs, "same": same, "caps": sorted(caps), "scale": scale}


def check_model(programs: Path, device: torch.device, seed: int = 0,
                name: str = "hymba-1.5b") -> tuple[dict, HymbaModel, dict]:
    """The preset `name` (hymba-1.5b) with random bf16 weights (made once: also returned, for
    other programs of the same model): compiled vs the eager bf16 reference on the device, a
    64-token prompt and 8 greedy steps; then 80 steps past a global-cache capacity (no reserve
    after the prompt: 128 meta + 64 prompt slots fill 256 after 64 steps), so the graph of the
    next capacity is captured and the caches move."""
    from .. import runtime as rt  # noqa: PLC0415

    config = preset(name)
    params = random_parameters(config, seed=seed, dtype=torch.bfloat16)
    runner = compiled_backend(config, params, torch.bfloat16, None, programs, (1, 4, 16), False,
                              device)
    model = HymbaModel(config, runner, None, f"preset {name} (seed {seed})", torch.bfloat16)
    reference = HymbaReference(config, {k: v.to(device) for k, v in params.items()})
    prompt = lambda s: torch.randint(3, config.vocab_size, (1, 64),  # noqa: E731
                                     generator=torch.Generator().manual_seed(s))
    with torch.inference_mode():
        first = _follow(runner, reference, prompt(1), 8, device)
        saved, rt.PREFILL_RESERVE = rt.PREFILL_RESERVE, 0
        try:
            growth = _follow(runner, reference, prompt(2), 80, device)
        finally:
            rt.PREFILL_RESERVE = saved
    del reference
    return {"max_abs_per_step": [round(e, 5) for e in first["errs"]],
            "argmax_equal_per_step": first["same"], "logit_scale": first["scale"],
            "across_capacities": {"capacities": growth["caps"], "steps": 80,
                                  "max_abs": round(max(growth["errs"][1:]), 5),
                                  "argmax_agree_steps": sum(growth["same"][1:])}}, model, params


def decode_rate(model, batch: int, device: torch.device, repeat: int) -> float:
    """Decode tok/s (all rows) after a 16-token prompt: DECODE_STEPS steps, median of runs."""
    backend = model.backend
    ids = torch.randint(3, model.config.vocab_size, (batch, 16),
                        generator=torch.Generator().manual_seed(batch))
    tok = torch.full((batch,), 5)

    def run():
        _, state = backend.prefill(ids, last_only=True)
        backend.decode(state, tok)  # first step: capture / warm
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(DECODE_STEPS):
            backend.decode(state, tok)
        _sync(device)
        return time.perf_counter() - t0

    run()
    return round(batch * DECODE_STEPS / statistics.median(run() for _ in range(repeat)), 1)


def prefill_rate(model, tokens: int, device: torch.device, repeat: int) -> float:
    ids = torch.randint(3, model.config.vocab_size, (1, tokens),
                        generator=torch.Generator().manual_seed(tokens))
    fn = lambda: model.backend.prefill(ids, want_cache=False, last_only=True)  # noqa: E731
    fn()
    return round(tokens / _median_s(fn, device, repeat), 1)


def _profile(fn, device) -> dict[str, float]:
    """{GPU kernel name: total us} of one call of fn (torch.profiler over CUPTI)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    fn()
    _sync(device)
    cuda = device.type == "cuda"  # on the CPU (trying the script) the ops' own times
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        fn()
        _sync(device)
    times: dict[str, float] = {}
    for e in prof.events():
        if e.device_type.name == ("CUDA" if cuda else "CPU"):
            us = e.device_time_total if cuda else e.self_cpu_time_total
            times[e.name] = times.get(e.name, 0.0) + us
    return times


def _by_family(times: dict[str, float], manifest: dict) -> dict[str, float]:
    owner = {d["name"]: k["family"] for k in manifest["kernels"].values()
             for d in k.get("device_kernels", [])}
    fam: dict[str, float] = {}
    for name, us in times.items():
        key = owner.get(name, "other (torch/copies)")
        fam[key] = round(fam.get(key, 0.0) + us, 1)
    return dict(sorted(fam.items(), key=lambda kv: -kv[1]))


def kernel_times(model, manifest: dict, device: torch.device, repeat: int) -> dict:
    """Per-family GPU time of one decode step (batch 1) and one 4k prefill, and torch at the
    same shapes: F.linear bf16 for the decode projections, SDPA with the sliding-window mask
    for prefill attention, the eager scan loop for the prefill scan."""
    import torch.nn.functional as F  # noqa: PLC0415

    c = model.config
    backend = model.backend
    _, state = backend.prefill(torch.tensor([[5] * 16]), last_only=True)
    decode = _by_family(_profile(lambda: backend.decode(state, torch.tensor([5])), device),
                        manifest)
    ids = torch.randint(3, c.vocab_size, (1, 4096), generator=torch.Generator().manual_seed(4))
    prefill = _by_family(_profile(lambda: backend.prefill(ids, want_cache=False, last_only=True),
                                  device), manifest)
    x = torch.randn(1, c.hidden_size, device=device, dtype=torch.bfloat16)
    w = torch.randn(c.in_proj_rows_owner, c.hidden_size, device=device, dtype=torch.bfloat16)
    torch_in_proj_us = _median_s(lambda: F.linear(x, w), device, repeat * 10) * 1e6
    S, W, M = 4096, c.sliding_window, c.num_memory_tokens
    q = torch.randn(1, c.num_attention_heads, M + S, c.qk_head_dim, device=device,
                    dtype=torch.bfloat16)
    k = torch.randn(1, c.num_attention_heads, M + S, c.qk_head_dim, device=device,
                    dtype=torch.bfloat16)
    v = torch.randn(1, c.num_attention_heads, M + S, c.v_dim, device=device, dtype=torch.bfloat16)
    i = torch.arange(M + S, device=device)
    mask = (i[None] <= i[:, None]) & ((i[:, None] - i[None] < W) | (i[None] < M))
    sdpa_us = _median_s(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                        device, repeat) * 1e6
    C, N = c.d_inner, c.mamba_d_state
    u = torch.randn(1, C, S, device=device)
    delta = torch.rand(1, C, S, device=device) * 0.1
    A = -torch.rand(C, N, device=device)
    B = torch.randn(1, N, S, device=device)
    Cm = torch.randn(1, N, S, device=device)
    D = torch.randn(C, device=device)
    z = torch.randn(1, C, S, device=device)
    bias = torch.zeros(C, device=device)
    scan_us = _median_s(lambda: selective_scan(u, delta, A, B, Cm, D, z, bias), device,
                        1) * 1e6
    sliding_layers = sum(p.attention != "global" for p in c.layer_plan())
    return {"decode_b1_us_by_family": decode, "prefill_4k_us_by_family": prefill,
            "torch": {"in_proj_F_linear_bf16_us": round(torch_in_proj_us, 1),
                      "sdpa_sliding_4k_us_per_layer": round(sdpa_us, 1),
                      "sdpa_sliding_layers": sliding_layers,
                      "scan_eager_loop_4k_us_per_layer": round(scan_us, 1)}}


def verdict(results: dict, save) -> int:
    """0 when every section ran and the fixture parity holds, else 1; the failures are saved
    under "failed". Bounds: fp32 (the CPU parity tests' 2e-4 of the logit scale, ids identical);
    bf16 weights against fp32 eager on the same weights: 1e-3 of the scale with fp32
    activations (fp32 math both); with the bf16dot linears (one bf16 rounding per linear input)
    no farther from fp32 eager than eager bf16 itself is (which rounds every activation:
    on the official tiny fixture 2.34 of a scale of 4.86, bf16dot 0.52), greedy ids equal."""
    failed = [f"{name}: {v['error']}" for name, v in results.items()
              if isinstance(v, dict) and "error" in v]
    fx = results.get("fixture", {})
    if "error" not in fx and fx:
        scale = max(1.0, fx["logit_scale"])
        checks = {"fp32 prefill vs official": fx["fp32_prefill_max_abs_vs_official"] <= 2e-4 * scale,
                  "fp32 decode vs official": fx["fp32_decode_max_abs_vs_official"] <= 2e-4 * scale,
                  "fp32 greedy ids": fx["fp32_greedy_ids_equal_official"],
                  "bf16 vs eager fp32": fx["bf16_prefill_max_abs_vs_eager_fp32_same_weights"]
                  <= (fx["eager_bf16_vs_eager_fp32_max_abs"] if fx.get("bf16_linears") == BF16_DOT
                      else 1e-3 * scale),
                  "bf16 greedy ids": fx["bf16_greedy_ids_equal_official"]}
        failed += [f"fixture: {name}" for name, ok in checks.items() if not ok]
    save("failed", failed)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hymba_compile.bench.gpu_check")
    p.add_argument("--bundle", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", default=None, help="write the results here (updated per section)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--model", default="hymba-1.5b",
                   help="the preset of the model sections (a smaller one to try the script)")
    p.add_argument("--all-sections", action="store_true",
                   help="on the CPU too: every section (to try the script without a GPU)")
    args = p.parse_args(argv)
    bundle = Path(args.bundle)
    programs = bundle / "programs"
    device = torch.device(args.device)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else "cpu", "torch": torch.__version__, "repeat": args.repeat}
    import tvm  # noqa: PLC0415

    results["tvm_runtime_only"] = bool(getattr(tvm.base, "_RUNTIME_ONLY", False))
    results["tvm_from"] = str(Path(tvm.__file__).parent)

    def tvm_libraries() -> list[str]:  # proof of what was loaded: no libtvm_compiler.so
        try:
            return sorted({line.split()[-1].rsplit("/", 1)[-1] for line in open("/proc/self/maps")
                           if "libtvm" in line})
        except OSError:
            return []

    def save(section: str, value) -> None:
        results[section] = value
        print(f"[gpu_check] {section}: {json.dumps(value, default=str)[:600]}", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(args.json + ".tmp")
            tmp.write_text(json.dumps(results, indent=1, default=str))
            tmp.replace(args.json)

    def section(name: str, fn):
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
            value = {"error": f"{type(e).__name__}: {e}"[:2000]}
        if isinstance(value, dict):
            value["seconds"] = round(time.perf_counter() - t0, 1)
        save(name, value)
        return value

    bound = section("bound", lambda: copy_bandwidth(device, args.repeat))
    section("fixture", lambda: check_fixture(bundle, programs, device))
    results["tvm_libraries"] = tvm_libraries()
    if device.type != "cuda" and not args.all_sections:
        def cpu_decode():
            folder, _ = _fixture(bundle)
            m = load(folder, dtype="bfloat16", cache_dir=programs, device=device,
                     decode_batches=(1,), progress=False)
            return {"b1_tok_s": decode_rate(m, 1, device, args.repeat)}
        section("decode", cpu_decode)
        return verdict(results, save)
    holder = {}

    def model_section():
        value, holder["model"], holder["params"] = check_model(programs, device, name=args.model)
        return value

    section("model", model_section)
    model = holder.get("model")
    if model is None:
        return verdict(results, save)
    manifest = json.loads((model.backend.artifact.path / "manifest.json").read_text())
    weight_bytes = model.backend.decode_weight_bytes
    gbps = bound.get("gbps", 0.0)

    def decode_section():
        out = {f"b{b}_tok_s": decode_rate(model, b, device, args.repeat) for b in (1, 4, 16)}
        bound_tok_s = gbps * 1e9 / weight_bytes
        out.update({"bound_b1_tok_s": round(bound_tok_s, 1),
                    "b1_of_bound": round(out["b1_tok_s"] / bound_tok_s, 3),
                    "b16_over_b1": round(out["b16_tok_s"] / out["b1_tok_s"], 2),
                    "weight_bytes": weight_bytes})
        nograph = HymbaModel(model.config, compiled_backend(
            model.config, holder["params"], torch.bfloat16, None, bundle / "programs-nograph",
            (1,), False, device), None, model.source, torch.bfloat16)
        out["b1_tok_s_no_cuda_graph"] = decode_rate(nograph, 1, device, args.repeat)
        return out

    section("decode", decode_section)
    section("prefill", lambda: {f"{n}_tok_s": prefill_rate(model, n, device, args.repeat)
                                for n in (1024, 4096)})
    section("launches", lambda: {"per_step": manifest["launches"],
                                 "per_layer": manifest["decode_launches_per_layer"]})
    section("kernels", lambda: kernel_times(model, manifest, device, args.repeat))
    return verdict(results, save)


if __name__ == "__main__":
    sys.exit(main())
