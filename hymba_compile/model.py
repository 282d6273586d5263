"""The public model object: `hymba_compile.load(...)` and what it returns."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .config import PRESETS, HymbaConfig, preset
from .errors import HymbaError, InputError, ModelNotFoundError
from .generate import GenerationStats, SamplingParams, generate_tokens
from .reference import HymbaReference
from .tokenizer import HymbaTokenizer
from .weights import load_parameters, random_parameters

BACKENDS = ("tvm", "eager")  # tvm: the compiled program (default); eager: the reference
DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).resolve().parent / "demo_model"  # trained by `train-demo`, shipped
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, config: HymbaConfig) -> torch.dtype:
    """A torch dtype from a name, a dtype, or None (the checkpoint's torch_dtype)."""
    if dtype is None:
        dtype = config.torch_dtype if config.torch_dtype in DTYPES else "float32"
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"dtype {dtype} is not supported; use float32 or bfloat16")
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; use float32 or bfloat16")
    return DTYPES[dtype]


def _as_rows(value, what: str) -> torch.Tensor:
    """`value` as a tensor, a flat list or 1-D tensor taken as one row; InputError if ragged."""
    try:
        t = torch.as_tensor(value)
    except (ValueError, TypeError, RuntimeError) as e:
        raise InputError(f"{what} must be a rectangular array: {e}") from None
    return t[None] if t.dim() == 1 else t


class HymbaModel:
    """A loaded Hymba: config, tokenizer (or None) and a backend that runs prefill and decode."""

    def __init__(self, config: HymbaConfig, backend, tokenizer: HymbaTokenizer | None,
                 source: str, dtype: torch.dtype):
        self.config = config
        self.backend = backend
        self.tokenizer = tokenizer
        self.source = source
        self.dtype = dtype
        self.last_stats = GenerationStats()

    # ---- input checking ----------------------------------------------------------------------
    def _prepare(self, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate ids [b, n] (a flat list or 1-D tensor is taken as one row) and a left-padding
        mask of the same shape; raise InputError naming the problem."""
        ids = _as_rows(input_ids, "input_ids")
        if ids.dim() != 2:
            raise InputError(f"input_ids must be [batch, n], got shape {list(ids.shape)}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise InputError("the prompt is empty: input_ids has no tokens")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InputError(f"input_ids must be integers, got {ids.dtype}")
        ids = ids.long()
        vocab = self.config.vocab_size
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            bad = ids[(ids < 0) | (ids >= vocab)][0].item()
            raise InputError(f"token id {bad} is outside the vocabulary [0, {vocab})")
        mask = None
        if attention_mask is not None:
            mask = _as_rows(attention_mask, "attention_mask")
            if tuple(mask.shape) != tuple(ids.shape):
                raise InputError(f"attention_mask shape {list(mask.shape)} != input_ids shape "
                                 f"{list(ids.shape)}")
            mask = mask.bool()
            if not bool((mask[:, 1:].long() >= mask[:, :-1].long()).all()):
                raise InputError("attention_mask must be left padding: zeros before ones in each row")
            if not bool(mask.any(-1).all()):
                raise InputError("a row of attention_mask has no real token")
            if bool(mask.all()):
                mask = None
        longest = int(ids.shape[1] if mask is None else mask.sum(-1).max())
        if longest > self.config.max_context:
            raise InputError(f"the prompt has {longest} tokens, over the context limit of "
                             f"{self.config.max_context}")
        return ids, mask

    # ---- public API --------------------------------------------------------------------------
    def logits(self, input_ids, attention_mask=None) -> torch.Tensor:
        """Logits of every prompt position: [batch, n, vocab] float32 (zeros at pad positions)."""
        ids, mask = self._prepare(input_ids, attention_mask)
        with torch.inference_mode():
            logits, _ = self.backend.prefill(ids, mask, want_cache=False)
        return logits

    def generate(self, input_ids, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, attention_mask=None, on_tokens=None) -> torch.Tensor:
        """Greedy or sampled continuation, stopping per row at EOS: [batch, n + new] int64.
        `on_tokens(tokens [batch])` is called as each step's tokens are chosen (for streaming)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        sampling = SamplingParams(do_sample, temperature, top_k, top_p, seed)
        ids, mask = self._prepare(input_ids, attention_mask)
        longest = int(ids.shape[1] if mask is None else mask.sum(-1).max())
        if longest + max_new_tokens > self.config.max_context:
            raise InputError(f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"the context limit of {self.config.max_context}")
        self.last_stats = GenerationStats()
        with torch.inference_mode():
            return generate_tokens(self.backend, ids, mask, max_new_tokens, sampling,
                                   self.config.eos_ids, self.config.pad_token_id or 0,
                                   on_tokens=on_tokens, stats=self.last_stats)


def load_config(path_or_preset: str | os.PathLike) -> tuple[HymbaConfig, Path | None]:
    """The config of a checkpoint folder (and the folder) or of a preset (and None).
    The name "demo" is the shipped demo model folder."""
    path = DEMO_DIR if str(path_or_preset) == DEMO_NAME else Path(path_or_preset)
    if path.is_dir():
        return HymbaConfig.from_file(path), path
    if str(path_or_preset) in PRESETS:
        return preset(str(path_or_preset)), None
    raise ModelNotFoundError(f"model {str(path_or_preset)!r} is neither a checkpoint folder "
                             f"nor a preset ({', '.join([DEMO_NAME, *PRESETS])})")


def load(path_or_preset: str | os.PathLike, backend: str = "tvm",
         dtype: str | torch.dtype | None = None, seed: int = 0,
         tokenizer: str | os.PathLike | None = None, target: str | None = None,
         cache_dir: str | os.PathLike | None = None,
         decode_batches: tuple[int, ...] | None = None, progress: bool = True,
         device: str | torch.device | None = None, variants: dict | None = None,
         fusions: dict[str, str] | None = None,
         prefill_batches: tuple[int, ...] = ()) -> HymbaModel:
    """Load a checkpoint folder (official HF format) or build a preset with seeded random weights.

    backend: "tvm" (compiled for `target`, the executable cached under `cache_dir`, see
    `artifacts.py`; compiled on first use with a progress bar unless `progress=False`) or
    "eager" (the PyTorch reference). dtype: "float32" | "bfloat16" (default: the checkpoint's
    torch_dtype); with "tvm" it is the weight dtype, activations being float32. tokenizer: a folder
    with tokenizer.json to use instead of the checkpoint's own (presets have none).
    decode_batches: the static decode batch sizes compiled (default 1, 2, 4, 8 on the CPU,
    1, 2, 4, 8, 16 on CUDA). device (tvm backend): "cpu", "cuda" or "cuda:N"; default: CUDA when
    torch sees a GPU and a program for it is cached or can be built, else the CPU, saying which
    on stderr. target: the program's target, default the device's ("cpu", or "cuda:sm_XY" from
    the GPU's compute capability). With a runtime-only TVM, a prebuilt program is loaded from
    `cache_dir` (`compile -o DIR`); nothing is compiled. variants (tvm backend): {kernel family:
    schedule variant name or `choices.Choice`}; default: what `explore` recorded for the target
    on this machine, else the hand-written defaults ({} forces those). fusions: whole-program
    fusion variants ({name: value}, `program_spec.FUSIONS`; default: each one's default).
    prefill_batches (tvm backend, CPU): batch sizes prefilled as one packed sequence of rows
    (`prefill_b{B}`; default none: row by row).
    """
    if backend not in BACKENDS:
        raise HymbaError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    config, folder = load_config(path_or_preset)
    torch_dtype = resolve_dtype(dtype, config)
    if folder is not None:
        params = load_parameters(folder, config, torch_dtype)
        source = str(folder)
    else:
        params = random_parameters(config, seed=seed, dtype=torch_dtype)
        source = f"preset {path_or_preset} (random weights, seed {seed})"
    tok_dir = folder
    if tokenizer is not None:
        if not HymbaTokenizer.available(tokenizer):
            raise ModelNotFoundError(f"no tokenizer.json in {tokenizer}")
        tok = HymbaTokenizer.from_folder(tokenizer)
    else:
        tok = HymbaTokenizer.from_folder(tok_dir) if tok_dir and HymbaTokenizer.available(tok_dir) else None
    if tok is not None and tok.vocab_size > config.vocab_size:
        raise ModelNotFoundError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocabulary "
                                 f"has {config.vocab_size}: they do not belong together")
    if backend == "eager":
        if device is not None and torch.device(device).type != "cpu":
            raise HymbaError("the eager backend runs on the CPU here; use backend='tvm' for "
                             f"device {device!r}")
        runner = HymbaReference(config, params)
    else:
        runner = _compiled_on_device(config, params, torch_dtype, target, cache_dir,
                                     decode_batches, progress, device, variants, fusions,
                                     prefill_batches)
    return HymbaModel(config, runner, tok, source, torch_dtype)


def _compiled_on_device(config, params, dtype, target, cache_dir, decode_batches, progress,
                        device, variants=None, fusions=None, prefill_batches=()):
    """compiled_backend on the requested device, or (device None) on CUDA when possible, else
    on the CPU, saying which on stderr."""
    from .targets import is_cpu_target, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    if dev is None and target is None and torch.cuda.is_available():
        try:
            runner = compiled_backend(config, params, dtype, None, cache_dir, decode_batches,
                                      progress, "cuda", variants, fusions)
        except (HymbaError, RuntimeError, ValueError) as e:  # TVM or CUDA errors included
            print(f"hymba_compile: running on the CPU: no CUDA program ({e})", file=sys.stderr)
        else:
            print(f"hymba_compile: running on {runner.device} ({runner.artifact_target})",
                  file=sys.stderr)
            return runner
    if dev is None:
        dev = "cpu" if target is None or is_cpu_target(target) else "cuda"
    return compiled_backend(config, params, dtype, target, cache_dir, decode_batches, progress,
                            dev, variants, fusions, prefill_batches)


def compiled_backend(config: HymbaConfig, params: dict[str, torch.Tensor], dtype: torch.dtype,
                     target: str | None = None, cache_dir=None, decode_batches=None,
                     progress: bool = True, device: str | torch.device = "cpu",
                     variants: dict | None = None, fusions: dict[str, str] | None = None,
                     prefill_batches: tuple[int, ...] = ()):
    """The `tvm` backend: the cached (or freshly compiled) program for `target` (default: the
    device's) with these weights bound on `device`."""
    from .artifacts import ensure_compiled, load_executable  # noqa: PLC0415 - tvm is heavy
    from .program_spec import ProgramSpec  # noqa: PLC0415
    from .runtime import CompiledRuntime  # noqa: PLC0415
    from .targets import (CPU_DECODE_BATCHES, CUDA_DECODE_BATCHES, device_target,  # noqa: PLC0415
                          is_cpu_target, resolve_device)

    dev = resolve_device(device)
    target = target or device_target(dev)
    if is_cpu_target(target) != (dev.type == "cpu"):
        raise HymbaError(f"a {target} program cannot run on device {dev}")
    if dev.type == "cuda" and target != device_target(dev):
        raise HymbaError(f"{dev} is {device_target(dev)}; a {target} program does not run on it")
    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    batches = decode_batches or (CPU_DECODE_BATCHES if dev.type == "cpu" else CUDA_DECODE_BATCHES)
    try:
        spec = ProgramSpec(config, name, tuple(batches), tuple(sorted((fusions or {}).items())),
                           tuple(prefill_batches or ()) if dev.type == "cpu" else ())
    except ValueError as e:
        raise HymbaError(str(e)) from None
    artifact = ensure_compiled(spec, target, cache_dir, variants, progress=progress)
    runtime = CompiledRuntime(load_executable(artifact), spec, params, dev)
    runtime.artifact, runtime.artifact_target = artifact, target
    return runtime
