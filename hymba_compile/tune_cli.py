"""`python -m hymba_compile tune`: MetaSchedule over a model's kernels, a table of the results
and optionally their JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_types import batch_list, positive_int
from .fileio import atomic_write_text

COLUMNS = (("family", "family"), ("symbol", "kernel"), ("trials", "trials"),
           ("tuning_s", "tune s"), ("best_ms", "best ms"), ("default_ms", "hand ms"),
           ("tuned_ms", "tuned ms"), ("speedup", "speedup"), ("max_rel_diff", "rel diff"),
           ("ok", "ok"))


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the `tune` subcommand to an argparse subparsers object."""
    p = sub.add_parser("tune", help="MetaSchedule-tune the kernels of a model's program into a "
                                    "JSON tuning database")
    p.add_argument("--model", required=True,
                   help="checkpoint folder, 'demo' or a preset (tiny, hymba-1.5b)")
    p.add_argument("--target", default="cpu", help="cpu (default), cpu:<mcpu> or cuda:sm_XX")
    p.add_argument("--kernels", nargs="+", default=None, metavar="FAMILY",
                   help="tune only these kernel families (e.g. gemv matmul; default all)")
    p.add_argument("--trials", type=positive_int, required=True,
                   help="MetaSchedule trials per kernel")
    p.add_argument("--out", default=None, metavar="DB",
                   help="database folder (default <cache>/tuned/<target name>, e.g. cpu-znver4)")
    p.add_argument("--cache-dir", default=None,
                   help="the cache whose tuned/<target name> is the default database (default "
                        "$HYMBA_COMPILE_CACHE or ~/.cache/hymba_compile; explore and compile "
                        "look there)")
    p.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT",
                   help="measure on the RPC servers of this tracker (builds stay here)")
    p.add_argument("--rpc-key", default=None, metavar="KEY", help="the servers' tracker key")
    p.add_argument("--prefill-rows", type=positive_int, default=1152,
                   help="rows a kernel with a symbolic row count is tuned at (default 1152: "
                        "128 meta + 1024 prompt tokens)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="weight dtype (default: the checkpoint's)")
    p.add_argument("--decode-batches", type=batch_list, default=None,
                   help="decode batch sizes of the program, e.g. 1 (default the target's)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the summary as JSON to this file")
    return p


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2e}" if value and abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """The summary rows as a plain text table (a kernel's error on a line below it)."""
    cells = [[title for _, title in COLUMNS]]
    cells += [[_cell(row.get(key)) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = []
    for i, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i and rows[i - 1].get("error"):
            lines.append(f"    {rows[i - 1]['error']}")
    return "\n".join(lines)


def run(args) -> int:
    """Tune, print the table, write --json; 1 when a tuned kernel disagrees with the default."""
    from .tune import tune  # noqa: PLC0415 - the compiler only for this command
    from .tune_db import default_database_dir  # noqa: PLC0415

    out = args.out
    if out is None and args.cache_dir is not None:
        out = default_database_dir(args.target, Path(args.cache_dir).expanduser())
    summary = tune(args.model, args.target, kernels=args.kernels, trials=args.trials,
                   out=out, rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
                   prefill_rows=args.prefill_rows, dtype=args.dtype,
                   decode_batches=args.decode_batches)
    print(format_table(summary["kernels"]))
    print(f"database: {summary['database']}")
    unused = [row["symbol"] for row in summary["kernels"] if not row.get("used_by_program", True)]
    if unused:
        print(f"{len(unused)} kernels have a symbolic row count and were tuned at "
              f"--prefill-rows {summary['prefill_rows']}: the compiled program (symbolic) does "
              f"not use their records; they compare MetaSchedule with the hand rule at that size")
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
        print(f"summary: {args.json}")
    wrong = [row["symbol"] for row in summary["kernels"] if row.get("ok") is False]
    if wrong:
        print(f"tuned kernels whose outputs differ from the default rule's: {', '.join(wrong)}")
    return 1 if wrong else 0
