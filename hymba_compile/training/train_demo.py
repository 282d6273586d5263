"""`python -m hymba_compile train-demo`: train the small Hymba shipped as the default model.

The exact Hymba architecture at toy scale (parallel attention + SSM heads, global and
sliding-window layers, meta tokens, K/V reuse groups of three and two), trained with the eager
reference (and a faster but equal scan, `training.scan`) on Shakespeare, saved in the official HF
format through `weights.save_parameters`.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..config import HymbaConfig
from ..fileio import atomic_path, atomic_write_text
from ..reference import HymbaReference
from ..tokenizer import HymbaTokenizer
from ..weights import load_parameters, random_parameters, save_parameters
from .bpe import save_tokenizer, train_bpe
from .corpus import SOURCE_NOTE, load_corpus
from .scan import selective_scan_fast

VALIDATION_FILE = "validation.safetensors"
METRICS_FILE = "metrics.json"


def demo_config(vocab_size: int) -> HymbaConfig:
    """~2.7M parameters with Hymba-1.5B's structure: global first/middle/last layers, K/V reuse
    groups of three and two, GQA 2:1, 16 meta tokens, a 64-token window."""
    return HymbaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=352, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=64, global_attn_idx=[0, 4, 7],
        kv_reuse_group=[[1, 2, 3], [5, 6]], num_memory_tokens=16, mamba_d_state=8, mamba_dt_rank=8,
        max_position_embeddings=1024, orig_max_position_embeddings=256, torch_dtype="bfloat16",
    )


@dataclass
class TrainSettings:
    steps: int = 800
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.1
    vocab_size: int = 4096
    seed: int = 0
    val_windows: int = 48


def token_stream(tok: HymbaTokenizer, works: dict[str, str]) -> torch.Tensor:
    """All works encoded without BOS, joined by EOS: [n_tokens] int64."""
    ids: list[int] = []
    for text in works.values():
        ids += tok.encode(text, add_special_tokens=False) + [tok.eos_id]
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, starts: torch.Tensor, seq_len: int, bos: int) -> torch.Tensor:
    """Examples [len(starts), seq_len + 2]: BOS then seq_len + 1 stream tokens. Inputs are
    [:, :-1], targets [:, 1:] (the first target is the token after BOS)."""
    offsets = starts[:, None] + torch.arange(seq_len + 1)
    body = stream[offsets]
    return torch.cat((torch.full((len(starts), 1), bos), body), dim=1)


def validation_windows(stream: torch.Tensor, count: int, seq_len: int, bos: int) -> torch.Tensor:
    """`count` evenly spaced, non-overlapping held-out examples (deterministic)."""
    starts = torch.linspace(0, len(stream) - seq_len - 2, count).long()
    return windows(stream, starts, seq_len, bos)


def mean_token_loss(model: HymbaReference, examples: torch.Tensor, batch: int = 16) -> float:
    """Mean next-token cross-entropy (nats/token) over every target of `examples`."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(examples), batch):
            ex = examples[i: i + batch]
            logits, _ = model.prefill(ex[:, :-1], want_cache=False)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ex[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += ex[:, 1:].numel()
    return total / count


def evaluate_folder(folder: Path) -> float:
    """Validation loss of a saved demo model on its shipped validation windows, float32 math."""
    config = HymbaConfig.from_file(folder)
    params = load_parameters(folder, config, torch.float32)
    examples = load_file(str(folder / VALIDATION_FILE))["examples"].long()
    return mean_token_loss(HymbaReference(config, params), examples)


def unigram_loss(train: torch.Tensor, examples: torch.Tensor, vocab: int) -> float:
    """Cross-entropy of the validation targets under add-one-smoothed training unigram counts."""
    counts = torch.bincount(train, minlength=vocab).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[examples[:, 1:].reshape(-1)].mean())


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out: Path, workdir: Path, s: TrainSettings, max_minutes: float = 27.0) -> dict:
    """Train and write the model folder `out` atomically; return the metrics."""
    t_start = time.time()
    torch.manual_seed(s.seed)
    corpus = load_corpus(workdir)
    tokenizer_obj = train_bpe(list(corpus.train.values()), s.vocab_size)
    stage = Path(tempfile.mkdtemp(prefix=".demo-", dir=out.parent if out.parent.exists() else None))
    try:
        save_tokenizer(tokenizer_obj, stage)
        tok = HymbaTokenizer.from_folder(stage)
        train_ids = token_stream(tok, corpus.train)
        val_ids = token_stream(tok, corpus.validation)
        val_examples = validation_windows(val_ids, s.val_windows, s.seq_len, tok.bos_id)

        config = demo_config(tok.vocab_size)
        params = {k: v.requires_grad_() for k, v in random_parameters(config, seed=s.seed).items()}
        model = HymbaReference(config, params, scan=selective_scan_fast)
        decay = [p for n, p in params.items() if p.dim() >= 2 and "A_log" not in n]
        no_decay = [p for n, p in params.items() if not (p.dim() >= 2 and "A_log" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=s.lr, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(s.seed)
        ema, steps_done = None, 0
        bar = tqdm(range(s.steps), desc="train-demo", unit="step")
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, s)
            starts = torch.randint(0, len(train_ids) - s.seq_len - 2, (s.batch_size,), generator=gen)
            ex = windows(train_ids, starts, s.seq_len, tok.bos_id)
            logits, _ = model.prefill(ex[:, :-1], want_cache=False)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ex[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
            opt.step()
            steps_done += 1
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr_at(step, s):.1e}")
            if (time.time() - t_start) / 60 > max_minutes:
                bar.write(f"stopping at step {step + 1}: the {max_minutes}-minute budget is spent")
                break
        bar.close()
        train_minutes = (time.time() - t_start) / 60

        final = {n: p.detach().to(torch.bfloat16) for n, p in params.items()}
        config.save(stage)
        save_parameters(stage, config, final)
        with atomic_path(stage / VALIDATION_FILE) as tmp:
            save_file({"examples": val_examples.to(torch.int16)}, str(tmp))
        val_loss = evaluate_folder(stage)
        metrics = {
            "validation_loss": val_loss,
            "validation_perplexity": math.exp(val_loss),
            "unigram_validation_loss": unigram_loss(train_ids, val_examples, tok.vocab_size),
            "validation": f"{s.val_windows} windows of BOS + {s.seq_len + 1} tokens from the held-out "
                          f"works {sorted(corpus.validation)}, float32 math on the stored bf16 weights",
            "train_tokens": int(len(train_ids)), "validation_tokens": int(len(val_ids)),
            "steps": steps_done, "final_train_loss_ema": ema, "train_minutes": round(train_minutes, 1),
            "parameters": sum(p.numel() for p in final.values()),
            "settings": asdict(s),
        }
        atomic_write_text(stage / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(stage / "README.md", model_card(config, metrics, corpus, sample_text(stage)))
        stage.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return metrics


SAMPLE_PROMPT = "To be, or not to be,"


def sample_text(folder: Path, prompt: str = SAMPLE_PROMPT, new_tokens: int = 80) -> str:
    """What `python -m hymba_compile generate` prints by default for `prompt`: sampled with
    temperature 0.8, top-k 40, seed 0, in the checkpoint's dtype (eager backend)."""
    from ..model import load

    model = load(folder)
    ids = model.tokenizer.encode(prompt)
    out = model.generate([ids], new_tokens, do_sample=True, temperature=0.8, top_k=40, seed=0)
    return model.tokenizer.decode(out[0].tolist())


def model_card(config: HymbaConfig, m: dict, corpus, sample: str) -> str:
    """The README.md of the demo model folder."""
    return f"""# hymba-demo: a small Hymba trained on Shakespeare

The default model of `python -m hymba_compile generate`. Architecture: Hymba (every layer runs
attention heads and Mamba SSM heads in parallel), hidden {config.hidden_size}, {config.num_hidden_layers} layers
(global attention in layers {config.global_attn_idx}, the rest sliding-window {config.sliding_window}), K/V reuse groups
{config.kv_reuse_group}, {config.num_attention_heads} query / {config.num_key_value_heads} K/V heads, SSM width {config.d_inner}, state {config.mamba_d_state},
{config.num_memory_tokens} meta tokens, vocabulary {config.vocab_size}; {m['parameters']:,} parameters stored in bfloat16.
Files are in the official Hugging Face Hymba format (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json).

## Corpus and licence

{SOURCE_NOTE}

Held out for validation: {', '.join(sorted(corpus.validation))} ({m['validation_tokens']:,} tokens);
training: the other {len(corpus.train)} works ({m['train_tokens']:,} tokens).

## Tokenizer

BPE trained with the `tokenizers` library on the training works: {config.vocab_size} ids (`<unk>`, `<s>`, `</s>`,
256 byte-fallback pieces, learned pieces), Llama-style metaspace, BOS added to prompts.

## Training and result

`python -m hymba_compile train-demo` ({m['steps']} steps of {m['settings']['batch_size']} x {m['settings']['seq_len']} tokens, AdamW, peak lr
{m['settings']['lr']}, cosine decay; {m['train_minutes']} minutes on 2 CPU cores, eager reference).

| | nats / token |
|---|---|
| validation loss (this model) | {m['validation_loss']:.4f} (perplexity {m['validation_perplexity']:.1f}) |
| unigram baseline (same tokenizer, training counts) | {m['unigram_validation_loss']:.4f} |

Validation: {m['validation']}.

Sample (prompt `{SAMPLE_PROMPT}`; temperature 0.8, top-k 40, seed 0, as `generate` does by default):

```
{sample}
```
"""
