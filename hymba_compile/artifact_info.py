"""`python -m hymba_compile info --artifact DIR`: a compiled program's manifest as tables (what
it was built for and from, the launches of each function, per kernel its schedule and, on
CUDA, ptxas resources). DIR is an entry folder or a cache folder of entries."""

from __future__ import annotations

from pathlib import Path

from .artifacts import MANIFEST, entries, read_manifest, verify
from .errors import HymbaError


def _table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def describe(entry: Path) -> str:
    """The tables of one entry."""
    try:
        m = read_manifest(entry)
    except (OSError, ValueError) as e:
        raise HymbaError(f"{entry / MANIFEST}: unreadable manifest ({e})") from None
    problem = verify(entry, None)
    c = m.get("config", {})
    lines = [f"{entry}",
             f"  target {m.get('target_name', m.get('target'))}"
             + (f" (arch {m['arch']}, CUDA graph {'on' if m.get('cuda_graph') else 'off'}, "
                f"nvcc {m.get('nvcc')}, fatbin {m.get('fatbin_bytes', 0):,} B: "
                f"{', '.join(m.get('fatbin_entries', []))})" if m.get("arch") else ""),
             f"  model: hidden {c.get('hidden_size')}, layers {c.get('num_hidden_layers')}, vocab "
             f"{c.get('vocab_size')}; weights {m.get('weight_dtype')}; decode batches "
             f"{m.get('decode_batches')}",
             f"  built {m.get('created')} in {m.get('compile_s', 0):.1f} s with tvm {m.get('tvm')}, "
             f"tvm-ffi {m.get('tvm_ffi')}, torch {m.get('torch')}; library {m.get('size', 0):,} B, "
             f"{'intact' if problem is None else 'DAMAGED: ' + problem}",
             f"  key {m.get('key')}; spec {str(m.get('spec_digest'))[:16]}, sources "
             f"{str(m.get('source_digest'))[:16]}", ""]
    launches = m.get("launches", {})
    if launches:
        per_layer = m.get("decode_launches_per_layer", {})
        rows = [[f, v["kernels"], v["launches"], v["in_graph"], per_layer.get(f, "")]
                for f, v in sorted(launches.items())]
        lines += [_table(["function", "kernel calls", "launches", "in CUDA graph",
                          "launches / layer"], rows), ""]
    rows = []
    for symbol, k in m.get("kernels", {}).items():
        if isinstance(k, str):  # a manifest of the first format: {symbol: variant}
            rows.append([symbol, "", k, "", "", "", "", ""])
            continue
        device = k.get("device_kernels", [])
        regs = max((d["registers"] or 0 for d in device), default=None)
        smem = max((d["shared_bytes"] or 0 for d in device), default=None)
        spills = sum(d["spill_store_bytes"] + d["spill_load_bytes"] for d in device) \
            if device else None
        calls = ", ".join(f"{f} {n}" for f, n in sorted(k.get("calls", {}).items()))
        rows.append([symbol, k.get("family"), k.get("variant"), len(device) if device else "",
                     regs, smem, spills, calls])
    lines.append(_table(["kernel", "family", "variant", "device kernels", "max regs",
                         "max smem", "spill B", "calls per function"], rows))
    return "\n".join(lines)


def print_artifacts(path: str) -> None:
    found = entries(Path(path).expanduser())
    if not found:
        raise HymbaError(f"{path} holds no compiled program (no {MANIFEST} in it or its folders)")
    for i, entry in enumerate(found):
        print(("\n" if i else "") + describe(entry))


BF16_DOT = "bf16 dot products"  # `linear_numerics` of a program with bf16dot linears


def linear_numerics(backend) -> str:
    """What a loaded program's linears compute in: "bf16 dot products" when its manifest lists
    bf16dot kernels (a bf16 program on a CPU with avx512_bf16: inputs rounded to bf16), else
    "float32 math" ("unknown" for a backend without a cache entry)."""
    artifact = getattr(backend, "artifact", None)
    if artifact is None:
        return "unknown"
    kernels = read_manifest(artifact.path).get("kernels", {})
    used = {k.get("variant") for k in kernels.values()}
    return BF16_DOT if "bf16dot" in used else "float32 math"

