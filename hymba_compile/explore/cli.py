"""`python -m hymba_compile explore`: arguments and dispatch to the kernel or model scope."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = "explore-out"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("explore", help="compare schedule variants and knobs per kernel, or "
                                       "fusion variants of the whole program; record the best")
    p.add_argument("--scope", choices=["kernels", "model"], default="kernels",
                   help="kernels: every variant x knob point of each kernel family at "
                        "Hymba-1.5B shapes (default); model: whole-program fusion variants")
    p.add_argument("--model", default="hymba-1.5b",
                   help="model scope: the model or preset timed end to end (default "
                        "hymba-1.5b); parity is checked on the tiny preset")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16",
                   help="model scope: weight dtype (default bfloat16)")
    p.add_argument("--target", default="cpu",
                   help="cpu (default; timed here) or cuda:sm_XX (kernel scope: built for the arch, "
                        "checked on pocl, resources from ptxas; timing needs the GPU, so nothing "
                        "is recorded)")
    p.add_argument("--kernels", nargs="*", default=None, metavar="FAMILY",
                   help="kernel families to explore (default: all), e.g. gemv matmul")
    p.add_argument("--cases", nargs="*", default=None,
                   help="only the bench cases whose name contains one of these")
    p.add_argument("--variants", nargs="*", default=None,
                   help="kernel scope: only these schedule variants (plus the default); model "
                        "scope: only these fusion variants")
    p.add_argument("--repeat", type=int, default=5, help="timed batches per point (median)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"folder for explore.json/.csv and the plots (default {DEFAULT_OUT})")
    p.add_argument("--cache-dir", default=None,
                   help="where the target's choices are recorded (default $HYMBA_COMPILE_CACHE "
                        "or ~/.cache/hymba_compile)")
    p.add_argument("--no-record", action="store_true",
                   help="do not record the best points as the target's choices")
    p.add_argument("--decode-steps", type=int, default=16, help="model scope: steps per run")
    p.add_argument("--prefill-tokens", type=int, default=512,
                   help="model scope: prompt length timed")
    return p


def run(args) -> int:
    from ..artifacts import default_cache_dir
    from ..errors import InputError

    from hymba_compile.schedules import named_target

    if args.repeat < 1:
        raise InputError(f"--repeat must be at least 1, got {args.repeat}")
    try:
        named_target(args.target)
    except ValueError as e:
        raise InputError(str(e)) from None
    cache_root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; name a folder for the report")
    if args.scope == "kernels":
        from .run import explore_kernels

        explore_kernels(args.target, out, args.kernels, args.cases, args.variants, args.repeat,
                        cache_root, record=not args.no_record)
        return 0
    from .model import explore_model

    explore_model(args.model, args.dtype, args.target, out, args.variants, args.repeat,
                  args.decode_steps, args.prefill_tokens, cache_root)
    return 0
