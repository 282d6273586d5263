"""Runs the compiled program: owns the weights as the program takes them, the meta-token state
(computed once per loaded model), and the decode state of a generation, which the compiled
functions update in place. Implements the backend protocol of `generate.py`
(`prefill`, `decode`), as `reference.HymbaReference` does.

State per generation (`DecodeState`), for a static decode batch bucket Bk >= the real batch:
  sliding owner layers  k/v ring caches [Bk, KV, M + W, d]  (meta prefix + window ring)
  global owner layers   k/v caches [Bk, KV, cap, d], cap grown (doubling) as positions pass it
  consumer layers       nothing (they read their producer's caches)
  every layer           conv state [Bk, K, C] and SSM state [Bk, N, C], float32
  pos [Bk] int32        the position of each row's next token (meta tokens are 0..M-1)
Caches are in the weight dtype: bf16 gives 1,920 bytes per owner layer and token at Hymba-1.5B.
Rows are prefilled one at a time (batch 1, no pad tokens computed) from the stored meta state and
copied into their batch row; decode then runs all rows at their own positions, so a left-padded
batch gives each row exactly what it gives alone. Rows past the real batch are idle filler.

Device: every tensor the program touches lives on the runtime's device (the weights uploaded
once, caches, conv and SSM state); per step only the token ids go in and the logits come out.
Decode state is persistent and reused by later generations, so a decode function captured as a
CUDA graph (whose kernels keep the pointers they were captured with) can be replayed: per batch
bucket one set of sliding caches, conv and SSM state, pos and ids; per (bucket, capacity) the
global caches. A prefill into a bucket retires the bucket's previous state, and decoding a
retired state raises instead of reading another generation's caches.
Imports no compiler module (`tvm.runtime` only): it runs with a runtime-only TVM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import tvm
import tvm_ffi
from tvm.runtime.vm import VirtualMachine

from .config import GLOBAL
from .errors import HymbaError, InputError
from .program_spec import ProgramSpec, cache_shapes, owner_layers
from .program_weights import TORCH, program_weights

CAP_ALIGN = 64  # global cache capacities are multiples of this many slots
PREFILL_RESERVE = 256  # decode slots a global cache gets beyond the prompt before it first grows


def _tvm(t: torch.Tensor):
    return tvm.runtime.from_dlpack(t)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pool_capacity(needed: int) -> int:
    """Global-cache slots of a pooled decode state: a power of two >= needed (>= CAP_ALIGN), so
    a handful of capacities (each a CUDA graph of its own) cover every context length."""
    cap = CAP_ALIGN
    while cap < needed:
        cap *= 2
    return cap


def load_cuda_runtime() -> None:
    """Load TVM's CUDA runtime library if it is not yet: it registers the loader of CUDA modules
    and the CUDA-graph builtins. TVM loads it at import, except a runtime-only TVM, which skips
    every device backend. It needs libcudart.so.13: torch's CUDA build has loaded it (else it
    is looked for in the `nvidia` wheels on sys.path). HymbaError when it cannot be loaded."""
    import ctypes  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from tvm_ffi.libinfo import load_lib_ctypes  # noqa: PLC0415

    libs = tvm.base._LOADED_LIBS
    if "tvm_runtime_cuda" in libs:
        return
    runtime_dir = Path(libs["tvm_runtime"]._name).resolve().parent

    def load():
        libs["tvm_runtime_cuda"] = load_lib_ctypes(package="tvm", target_name="tvm_runtime_cuda",
                                                   extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL")

    if torch.cuda.is_available():
        torch.cuda.init()
    try:
        load()
        return
    except (OSError, FileNotFoundError, RuntimeError) as e:
        first = e
    for folder in map(Path, sys.path):
        for cudart in sorted((folder / "nvidia").glob("**/libcudart.so.13")) \
                if (folder / "nvidia").is_dir() else []:
            try:
                ctypes.CDLL(str(cudart), mode=ctypes.RTLD_GLOBAL)
                load()
                return
            except (OSError, FileNotFoundError, RuntimeError):
                continue
    raise HymbaError(f"cannot load TVM's CUDA runtime (libtvm_runtime_cuda.so in {runtime_dir}): "
                     f"{first}")


def tvm_device(device: torch.device):
    """The TVM device of a torch device ("cpu", "cuda:N")."""
    if device.type == "cpu":
        return tvm.cpu()
    if device.type == "cuda":
        return tvm.cuda(device.index or 0)
    raise HymbaError(f"device {device} is not supported; use cpu or cuda[:N]")


@dataclass
class DecodeState:
    """What decode needs between steps; tensors are torch and shared with the program (dlpack)."""

    batch: int  # real rows
    bucket: int  # compiled decode batch (>= batch)
    caches: list[torch.Tensor]  # k, v per owner layer
    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]
    pos: torch.Tensor  # [bucket] int32
    ids: torch.Tensor  # [bucket] int32, the tokens of the step
    global_mask: list[bool] = field(default_factory=list)  # per cache tensor: a global layer's
    args: tuple = field(default=())  # the tvm views passed to decode, rebuilt after growth
    max_pos: int = 0  # host copy of pos.max(): no device sync per step
    retired: bool = False  # a later prefill took this state's buffers

    def bind(self) -> None:
        self.args = (_tvm(self.ids), _tvm(self.pos), tvm_ffi.Array([_tvm(t) for t in self.caches]),
                     tvm_ffi.Array([_tvm(t) for t in self.conv]),
                     tvm_ffi.Array([_tvm(t) for t in self.ssm]))

    @property
    def capacity(self) -> int | None:
        """Slots of the global caches (None without global layers)."""
        caps = [t.shape[2] for t, glob in zip(self.caches, self.global_mask) if glob]
        return caps[0] if caps else None


class CompiledRuntime:
    """A loaded executable with its weights bound: the `tvm` backend."""

    artifact = None  # the cache entry it was loaded from (set by `model.compiled_backend`)

    def __init__(self, executable: tvm.runtime.Module, spec: ProgramSpec,
                 params: dict[str, torch.Tensor], device: str | torch.device = "cpu"):
        self.spec, self.config = spec, spec.config
        self.device = torch.device(device)
        self.vm = VirtualMachine(executable, tvm_device(self.device))
        self._weights_torch = [t.to(self.device) for t in
                               program_weights(spec.config, params, spec.weight_dtype)]
        self._pool_bucket: dict[int, tuple] = {}  # bucket -> sliding caches, conv, ssm, pos, ids
        self._pool_global: dict[tuple[int, int], dict] = {}  # (bucket, cap) -> global caches
        self._holder: dict[int, DecodeState] = {}  # bucket -> the live state on its buffers
        self.weights = tvm_ffi.Array([_tvm(t) for t in self._weights_torch])
        self.fn = {name: self.vm[name] for name in
                   ("prefix", "prefill", "logits_last", "logits_all",
                    *[f"decode_b{b}" for b in spec.decode_batches])}
        # batched prefill: the spec's sizes, where the program has them (CPU programs)
        self.prefill_sizes = []
        for b in sorted(spec.prefill_batches, reverse=True):
            if self._has_function(f"prefill_b{b}"):
                self.fn[f"prefill_b{b}"] = self.vm[f"prefill_b{b}"]
                self.prefill_sizes.append(b)
        self.cache_dtype = TORCH[spec.cache_dtype]
        self.owners = owner_layers(spec.config)
        self._global = [p.attention == GLOBAL for p in self.owners for _ in (0, 1)]
        # the meta-token prefix: K/V of every owner layer, conv and SSM state after it
        meta_k, meta_v, conv, ssm = self.fn["prefix"](self.weights)
        self.meta = (meta_k, meta_v, conv, ssm)

    @property
    def decode_weight_bytes(self) -> int:
        """Weight bytes a decode step reads: every program weight but the meta tokens (the tied
        embedding is read whole by the lm_head GEMV)."""
        meta = self.config.num_memory_tokens * self.config.hidden_size * 4
        return sum(t.numel() * t.element_size() for t in self._weights_torch) - meta

    # ---- helpers -----------------------------------------------------------------------------
    def bucket_for(self, batch: int) -> int:
        for b in sorted(self.spec.decode_batches):
            if b >= batch:
                return b
        raise InputError(f"a batch of {batch} rows is larger than the largest compiled decode batch "
                         f"({max(self.spec.decode_batches)}); compile with larger --decode-batches")

    def _has_function(self, name: str) -> bool:
        try:
            self.vm[name]
        except Exception:  # noqa: BLE001 - the VM raises its own error for a missing function
            return False
        return True

    def _row_caches(self, n: int) -> list[torch.Tensor]:
        """Fresh caches of one row for an n-token prompt (global ones sized for it)."""
        cap = _round_up(self.config.num_memory_tokens + n + PREFILL_RESERVE, CAP_ALIGN)
        return [torch.zeros(s, dtype=self.cache_dtype, device=self.device)
                for s in cache_shapes(self.config, 1, cap)]

    def _prefill_group(self, rows: list[torch.Tensor], want_hidden_all: bool) -> list:
        """The real tokens of B rows (a compiled batched size) in one `prefill_b{B}` call: every
        linear runs over all rows at once. -> per row (logits [n_r or 1, V], caches, conv,
        ssm), as `_prefill_row`."""
        B, M, L = len(rows), self.config.num_memory_tokens, self.config.num_hidden_layers
        dev, to_torch = self.device, torch.from_dlpack
        lengths = [int(r.shape[0]) for r in rows]
        caches = [self._row_caches(n) for n in lengths]
        ids = [_tvm(r.to(dev, torch.int32).contiguous()) for r in rows]
        positions = [_tvm(torch.arange(M, M + n, dtype=torch.int32, device=dev)[None])
                     for n in lengths]
        hidden, _, conv, ssm = self.fn[f"prefill_b{B}"](
            *ids, *positions, *self.meta, *[tvm_ffi.Array([_tvm(t) for t in c]) for c in caches],
            self.weights)
        hidden = to_torch(hidden)
        ends = torch.tensor(lengths).cumsum(0).tolist()
        if want_hidden_all:
            logits = [to_torch(self.fn["logits_all"](_tvm(hidden[e - n:e].contiguous()),
                                                     self.weights)).cpu()
                      for n, e in zip(lengths, ends)]
        else:  # the last position of every row, one GEMV call for the batch
            last = torch.stack([hidden[e - 1] for e in ends])
            all_last = to_torch(self.fn["logits_all"](_tvm(last), self.weights)).cpu()
            logits = [all_last[r:r + 1] for r in range(B)]
        conv, ssm = [to_torch(t) for t in conv], [to_torch(t) for t in ssm]
        return [(logits[r], caches[r], conv[r * L:(r + 1) * L], ssm[r * L:(r + 1) * L])
                for r in range(B)]

    def _prefill_rows(self, rows: list[torch.Tensor], want_hidden_all: bool) -> list:
        """Every row's prefill: groups of the largest compiled batched size first, the rest one
        row at a time."""
        out, i = [], 0
        while i < len(rows):
            size = next((b for b in self.prefill_sizes if b <= len(rows) - i), 1)
            if size == 1:
                out.append(self._prefill_row(rows[i], want_hidden_all))
            else:
                out.extend(self._prefill_group(rows[i:i + size], want_hidden_all))
            i += size
        return out

    def _prefill_row(self, ids: torch.Tensor, want_hidden_all: bool):
        """One row's real tokens [n] -> (logits [n or 1, V], row state (caches, conv, ssm))."""
        n, M, dev = int(ids.shape[0]), self.config.num_memory_tokens, self.device
        caches = self._row_caches(n)
        ids32 = ids.to(dev, torch.int32).contiguous()
        positions = torch.arange(M, M + n, dtype=torch.int32, device=dev)[None]
        hidden, _, conv, ssm = self.fn["prefill"](
            _tvm(ids32), _tvm(positions), *self.meta,
            tvm_ffi.Array([_tvm(t) for t in caches]), self.weights)
        logits = self.fn["logits_all" if want_hidden_all else "logits_last"](hidden, self.weights)
        to_torch = torch.from_dlpack
        return (to_torch(logits).cpu(), caches, [to_torch(t) for t in conv],
                [to_torch(t) for t in ssm])

    # ---- backend protocol --------------------------------------------------------------------
    @torch.inference_mode()  # the pooled state may be inference tensors
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                want_cache: bool = True, last_only: bool = False):
        """input_ids [b, n] (left-padded where attention_mask is 0) -> (logits [b, n, V] float32,
        zero at pads, or [b, 1, V] with `last_only`; the DecodeState or None)."""
        b, n = input_ids.shape
        real = (torch.ones(b, n, dtype=torch.bool) if attention_mask is None
                else attention_mask.bool())
        bucket = self.bucket_for(b) if want_cache else b
        out = torch.zeros(b, 1 if last_only else n, self.config.vocab_size)
        rows = []
        per_row = self._prefill_rows([input_ids[r][real[r]] for r in range(b)], not last_only)
        for r, (logits, caches, conv, ssm) in enumerate(per_row):
            if last_only:
                out[r, 0] = logits[-1]
            else:
                out[r, n - logits.shape[0]:] = logits
            if want_cache:
                rows.append((int(real[r].sum()), caches, conv, ssm))
        return out, (self._batch_state(rows, bucket) if want_cache else None)

    def _buffers(self, bucket: int, cap: int) -> tuple[list, list, list, torch.Tensor, torch.Tensor]:
        """The pooled buffers of a decode state: per bucket the sliding caches, conv and SSM
        state, pos and ids; per (bucket, capacity) the global caches. Allocated once, kept for
        the runtime's life (a captured CUDA graph replays with these pointers)."""
        c, dev = self.config, self.device
        if bucket not in self._pool_bucket:
            sliding = {i: torch.zeros(s, dtype=self.cache_dtype, device=dev)
                       for i, s in enumerate(cache_shapes(c, bucket, 0)) if not self._global[i]}
            conv = [torch.zeros(bucket, c.mamba_d_conv, c.d_inner, device=dev)
                    for _ in range(c.num_hidden_layers)]
            ssm = [torch.zeros(bucket, c.mamba_d_state, c.d_inner, device=dev)
                   for _ in range(c.num_hidden_layers)]
            self._pool_bucket[bucket] = (sliding, conv, ssm,
                                         torch.zeros(bucket, dtype=torch.int32, device=dev),
                                         torch.zeros(bucket, dtype=torch.int32, device=dev))
        sliding, conv, ssm, pos, ids = self._pool_bucket[bucket]
        if (bucket, cap) not in self._pool_global:
            self._pool_global[(bucket, cap)] = {
                i: torch.zeros(s, dtype=self.cache_dtype, device=dev)
                for i, s in enumerate(cache_shapes(c, bucket, cap)) if self._global[i]}
        glob = self._pool_global[(bucket, cap)]
        caches = [glob[i] if i in glob else sliding[i] for i in range(len(self._global))]
        return caches, conv, ssm, pos, ids

    def _take(self, bucket: int, cap: int) -> DecodeState:
        """A decode state on the pooled buffers of (bucket, cap); the bucket's previous state
        is retired (it shares the bucket's buffers)."""
        old = self._holder.get(bucket)
        if old is not None:
            old.retired = True
        state = DecodeState(0, bucket, *self._buffers(bucket, cap), self._global)
        state.bind()
        self._holder[bucket] = state
        return state

    def _batch_state(self, rows, bucket: int) -> DecodeState:
        """Copy the rows' prefill states into the pooled decode state of `bucket` rows."""
        M = self.config.num_memory_tokens
        caps = [r[1][i].shape[2] for r in rows for i, g in enumerate(self._global) if g]
        cap = _pool_capacity(max(caps)) if caps else 0
        state = self._take(bucket, cap)
        for t in state.caches + state.conv + state.ssm:
            t.zero_()
        for r, (_, row_caches, row_conv, row_ssm) in enumerate(rows):
            for dst, src in zip(state.caches, row_caches):
                dst[r, :, :src.shape[2]] = src[0]
            for dst, src in zip(state.conv + state.ssm, row_conv + row_ssm):
                dst[r] = src[0]
        starts = [M] * bucket  # idle rows: an empty prompt
        starts[:len(rows)] = [M + r[0] for r in rows]
        state.pos.copy_(torch.tensor(starts, dtype=torch.int32))
        state.ids.zero_()
        state.batch, state.max_pos = len(rows), max(starts)
        return state

    def _grow(self, state: DecodeState, needed: int) -> None:
        """Move the global caches into the pooled ones of a larger capacity (at least doubling),
        copying them; the sliding caches, conv and SSM state, pos and ids are the bucket's and
        stay where they are."""
        cap = _pool_capacity(max(needed, 2 * state.capacity))
        caches = self._buffers(state.bucket, cap)[0]
        for i, glob in enumerate(self._global):
            if glob:
                old, new = state.caches[i], caches[i]
                new.zero_()
                new[:, :, :old.shape[2]] = old
        state.caches = caches
        state.bind()

    @torch.inference_mode()  # the pooled state may be inference tensors
    def decode(self, state: DecodeState, token_ids: torch.Tensor) -> torch.Tensor:
        """One step: token_ids [b] -> logits [b, V] float32 (on the CPU); `state` advances in
        place."""
        if state.retired:
            raise InputError("this decode state was retired: a later prefill reused its buffers "
                             "(one generation per batch bucket at a time)")
        cap = state.capacity
        if cap is not None and state.max_pos + 1 > cap:
            self._grow(state, state.max_pos + 1)
        state.ids[:state.batch] = token_ids.to(self.device, torch.int32)
        logits, *_ = self.fn[f"decode_b{state.bucket}"](*state.args, self.weights)
        state.pos += 1
        state.max_pos += 1
        return torch.from_dlpack(logits)[:state.batch].cpu()
