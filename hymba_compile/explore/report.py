"""What `explore` writes: a rich table in the terminal, and in the output folder
`explore.json` (every row plus the run's machine and choices), `explore.csv`, and two PNG
plots (matplotlib): time per point per family relative to the default (`variants.png`) and
build time against run time with each case's Pareto front (`pareto.png`). Every file is written
atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..fileio import atomic_path, atomic_write_text

CSV_FIELDS = ("case", "shape", "family", "choice", "status", "ms", "vs_default", "baseline",
              "baseline_ms", "vs_baseline", "build_s", "max_abs_err", "tolerance", "error")


CUDA_FIELDS = ("case", "shape", "family", "choice", "status", "registers", "shared_bytes",
               "spill_bytes", "launches", "pocl_err", "tolerance", "timing", "error")


def print_cuda_table(rows: list[dict], title: str) -> None:
    """CUDA points without a GPU: resources and the pocl check."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("case", "family", "point", "regs", "smem", "spills", "launches", "pocl err",
                 "ms", "status"):
        table.add_column(name, justify="left" if name in ("case", "family", "point", "status")
                         else "right")
    for r in rows:
        status = r["status"] if r["status"] == "built" else \
            f"[red]{r['status']}[/red]: {r.get('error', '')[:50]}"
        table.add_row(f"{r['case']} {r['shape'][:24]}", r["family"], r["choice"],
                      _fmt(r.get("registers")), _fmt(r.get("shared_bytes")),
                      _fmt(r.get("spill_bytes")), _fmt(r.get("launches")),
                      _fmt(r.get("pocl_err")), r.get("timing", ""), status)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def plot_resources(path: Path, rows: list[dict], title: str) -> None:
    """Registers per thread (bars) and shared KiB (dots) per CUDA point; failed points red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.16 * len(rows) + 1.0)))
    labels = [f"{r['case']} [{r['family']}] {r['choice']}"[:70] for r in rows]
    regs = [r.get("registers") or 0 for r in rows]
    ax.barh(range(len(rows)), regs, color=["tab:blue" if r["status"] == "built" else "tab:red"
                                           for r in rows])
    ax.scatter([(r.get("shared_bytes") or 0) / 1024 for r in rows], range(len(rows)),
               color="black", s=6, label="shared KiB")
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("registers per thread (bars), static shared KiB (dots); red: failed")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def print_table(rows: list[dict], title: str) -> None:
    """The rows as one rich table (cases in order; the chosen points marked by the caller)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name, justify in (("case", "left"), ("family", "left"), ("point", "left"),
                          ("ms", "right"), ("vs default", "right"), ("vs eager", "right"),
                          ("build s", "right"), ("status", "left")):
        table.add_column(name, justify=justify)
    for r in rows:
        ok = r.get("status") == "ok"
        status = "ok" if ok else f"[red]{r.get('status')}[/red]: {r.get('error', '')[:60]}"
        if r.get("chosen"):
            status += " [green]chosen[/green]"
        table.add_row(f"{r['case']} {r['shape'][:24]}", r["family"], r["choice"],
                      _fmt(r.get("ms")), _fmt(r.get("vs_default"), "x"),
                      _fmt(r.get("vs_baseline"), "x"), _fmt(r.get("build_s")), status)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def _fmt(value, suffix: str = "") -> str:
    return "" if value is None else f"{value:.3g}{suffix}"


def write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    write_csv_fields(path, rows, CSV_FIELDS)


def write_csv_fields(path: Path, rows: list[dict], fields: tuple) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def plot_variants(path: Path, rows: list[dict], title: str) -> None:
    """One line per bench case: every timed point as a dot at its speed-up over the default
    (log scale; > 1 is faster), the chosen points as green stars, the case's eager baseline as a
    grey tick (eager ms / default ms: right of 1, the default beats eager), failed or wrong
    points as red crosses at the left edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases: dict[str, list[dict]] = {}
    for r in rows:
        cases.setdefault(f"{r['case']}  {r['shape'][:30]}", []).append(r)
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.22 * len(cases) + 1.2)))
    timed = [r["vs_default"] for r in rows if r.get("vs_default")]
    left = min([*timed, 0.5]) / 1.5
    for y, (name, pts) in enumerate(cases.items()):
        ok = [p for p in pts if p.get("vs_default")]
        ax.scatter([p["vs_default"] for p in ok], [y] * len(ok), s=10, color="tab:blue",
                   alpha=0.6, zorder=3)
        chosen = [p for p in ok if p.get("chosen")]
        ax.scatter([p["vs_default"] for p in chosen], [y] * len(chosen), s=60, marker="*",
                   color="tab:green", zorder=4)
        bad = [p for p in pts if p.get("status") not in ("ok",)]
        ax.scatter([left] * len(bad), [y] * len(bad), s=20, marker="x", color="tab:red", zorder=3)
        default = next((p for p in pts if p["choice"] == "default" and p.get("ms")), None)
        if default:
            ax.scatter([default["baseline_ms"] / default["ms"]], [y], s=80, marker="|",
                       color="0.4", zorder=2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(cases)), list(cases), fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over the default schedule (dots: points; green stars: chosen; grey "
                  "tick: eager time / default time; red x: failed or wrong)", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_pareto(path: Path, rows: list[dict], title: str) -> None:
    """Build seconds against run ms per point (log scales), one colour per case, the points on
    each case's Pareto front (nothing both faster to build and to run) joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("build_s") and r.get("ms"):
            by_case.setdefault(f"{r['case']} {r['shape'][:20]}", []).append(r)
    for name, pts in by_case.items():
        xs, ys = [p["build_s"] for p in pts], [p["ms"] for p in pts]
        line = ax.scatter(xs, ys, s=12, label=name[:40])
        front = pareto_front(pts)
        ax.plot([p["build_s"] for p in front], [p["ms"] for p in front], linewidth=0.8,
                color=line.get_facecolor()[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("build time (schedule + compile), s")
    ax.set_ylabel("run time (median), ms")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    _save(fig, path)


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both build time and run time, by build time."""
    front, best_ms = [], float("inf")
    for p in sorted(points, key=lambda p: (p["build_s"], p["ms"])):
        if p["ms"] < best_ms:
            front.append(p)
            best_ms = p["ms"]
    return front


def print_model_table(rows: list[dict], title: str) -> None:
    """The fusion variants as one rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("variant", "parity", "compile s", "decode b1 tok/s", "decode b4 tok/s",
                 "prefill tok/s", "status"):
        table.add_column(name, justify="left" if name in ("variant", "status") else "right")
    for r in rows:
        def cell(key: str) -> str:
            value, rel = r.get(f"{key}_tok_s"), r.get(f"{key}_vs_default")
            return "" if value is None else f"{value:.3g}" + (f" ({rel:.2f}x)" if rel else "")
        parity = "" if r.get("parity_max_abs") is None else f"{r['parity_max_abs']:.1e}"
        status = r.get("status", "")
        if status != "ok":
            status = f"[red]{status}[/red]: {r.get('error', '')[:60]}"
        table.add_row(r["variant"], parity, _fmt(r.get("compile_s")), cell("decode_b1"),
                      cell("decode_b4"), cell("prefill"), status)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def plot_model(path: Path, rows: list[dict], title: str) -> None:
    """Per fusion variant: decode b1, decode b4 and prefill throughput relative to the default
    program (bars), and cold compile seconds against decode b1 tok/s (Pareto, right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r.get("decode_b1_tok_s")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    keys = ("decode_b1", "decode_b4", "prefill")
    width = 0.8 / len(keys)
    base = timed[0] if timed else {}
    for n, key in enumerate(keys):
        values = [r[f"{key}_tok_s"] / base[f"{key}_tok_s"] if base.get(f"{key}_tok_s") else 0
                  for r in timed]
        ax.bar([i + n * width for i in range(len(timed))], values, width, label=key)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + width for i in range(len(timed))], [r["variant"] for r in timed],
                  rotation=20, fontsize=7)
    ax.set_ylabel("throughput / default program")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    for r in timed:
        ax2.scatter(r["compile_s"], r["decode_b1_tok_s"])
        ax2.annotate(r["variant"], (r["compile_s"], r["decode_b1_tok_s"]), fontsize=6)
    ax2.set_xlabel("cold compile, s")
    ax2.set_ylabel("decode batch 1, tokens/s")
    ax2.set_title("compile time vs run time", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
