"""The whole model as one Relax IRModule: every layer calls our scheduled `ir/` kernels with
`call_tir` (in-place ones with `call_tir_inplace`), so a step is one VM call with no Python per
kernel. Mirrors `reference.HymbaReference` (prefill from the meta-token state, cached decode).

Functions (weights = one tuple argument in `program_weights.weight_specs` order, bound once):

  prefix(weights)
      the M meta tokens alone, from zero state -> (meta_k, meta_v per owner layer
      [1, KV, M, d], conv state [1, K, C] and SSM state [1, N, C] per layer). Prompt-independent:
      the runtime runs it once per loaded model.
  prefill(ids [n] i32, positions [1, n] i32, prefix state..., ring / global row caches...,
          weights)
      the prompt of one row after the meta tokens -> (normed hidden [n, H], the caches filled in
      place, conv and SSM state after the prompt). Attention keys are [meta; prompt].
  logits_last(hidden [n, H], weights) -> [1, V];  logits_all(hidden, weights) -> [n, V]
  decode_b{B}(ids [B] i32, pos [B] i32, caches..., conv [B, K, C], ssm [B, N, C], weights)
      one token per row at per-row positions -> (logits [B, V], the state, updated in place).

Activations are float32 everywhere; weights float32 or bfloat16; caches in the weight dtype
(bf16: the spec's 1,920 bytes per owner layer and token). Global caches have a symbolic
capacity `cap` so the runtime can grow them without recompiling.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

from hymba_compile.ir import embed, linear, norm
from hymba_compile.ir.common import KERNEL_ATTR
from hymba_compile.schedules.registry import schedule
from hymba_compile.schedules.options import build_for

from .build import builder_knobs, tuned_schedule
from .choices import LIBRARY, TUNED, Choice
from .config import HymbaConfig
from .program_layer import DecodeSteps, PackedSteps, SequenceSteps, layer
from .program_spec import ProgramSpec, cache_shapes, owner_layers  # noqa: F401 - re-exported
from .program_weights import weight_specs

F32, I32 = "float32", "int32"
LIBRARY_ATTR = "hymba.library_kernels"  # module attr: {symbol: family} of library-call kernels
OPAQUE_PATTERN = 8  # relax OpPatternKind.kOpaque


def _tensor(shape, dtype=F32) -> relax.TensorType:
    return relax.TensorType(list(shape), dtype)


class _Kernels:
    """Scheduled PrimFuncs added to the module once each, by global symbol."""

    def __init__(self, bb: relax.BlockBuilder, target: tvm.target.Target,
                 variants: dict[str, "Choice | str"], on_kernel=None, tuned_dir=None,
                 scheduling: bool = True):
        self.bb, self.target, self.tuned_dir = bb, target, tuned_dir
        self.scheduling = scheduling  # False: collect the kernels as ir/ built them
        self.unscheduled: dict[str, tirx.PrimFunc] = {}
        self.library: dict[str, str] = {}  # symbol -> family of the kernels a library call replaces
        self.choices = {family: Choice.coerce(c) for family, c in variants.items()}
        self.gvars: dict[str, relax.GlobalVar] = {}
        self.chosen: dict[str, str] = {}
        self.on_kernel = on_kernel
        self.built: dict = {}  # (builder, args, kwargs) -> PrimFunc: each layer asks again

    def __call__(self, func: tirx.PrimFunc) -> relax.GlobalVar:
        symbol = str(func.attrs["global_symbol"])
        if symbol not in self.gvars and not self.scheduling:
            self.unscheduled[symbol] = func
            self.gvars[symbol] = self.bb.add_func(func, symbol)
        if symbol not in self.gvars:
            choice = self.choice_of(func)
            if choice.variant == TUNED:  # the database's schedule; else the default rule
                sch = tuned_schedule(func, self.target, self.tuned_dir)
                mod, used = (sch.mod, TUNED) if sch is not None else schedule(func, self.target)
                used = used if sch is not None else f"{used} (no tuned record)"
            elif choice != Choice():
                try:
                    mod, _ = schedule(func, self.target, choice.variant,
                                      dict(choice.rule_knobs) or None)
                    used = choice.label()
                except ValueError:  # chosen at other sizes; it does not fit this kernel
                    mod, used = schedule(func, self.target)
                    used = f"{used} ({choice.label()} does not apply)"
            else:
                mod, used = schedule(func, self.target)
            scheduled = mod["main"]
            # opaque: Relax's FuseOps must leave our scheduled kernels whole (fusing an in-place
            # two-output cache write into a one-op group breaks FuseTIR on CUDA)
            scheduled = scheduled.with_attr({"tirx.is_scheduled": True, "global_symbol": symbol,
                                             "op_pattern": OPAQUE_PATTERN})
            self.gvars[symbol] = self.bb.add_func(scheduled, symbol)
            self.chosen[symbol] = used
            if self.on_kernel is not None:
                self.on_kernel(symbol)
        return self.gvars[symbol]

    def choice_of(self, func: tirx.PrimFunc) -> Choice:
        """The choice for this kernel: by its symbol (one shape), else by its family."""
        return self.choices.get(str(func.attrs["global_symbol"])) or \
            self.choices.get(str(func.attrs[KERNEL_ATTR]), Choice())

    def library_function(self, func: tirx.PrimFunc) -> str | None:
        """The packed function standing in for `func` when its family's choice is the library
        variant (hymba_compile/library.py), else None."""
        family = str(func.attrs[KERNEL_ATTR])
        if self.choice_of(func).variant != LIBRARY:
            return None
        from .library import FUNCS, supports

        if not supports(family, "cpu" if self.target.kind.name == "llvm" else "cuda"):
            return None  # no library here: the family's default rule (labelled by __call__)
        symbol = str(func.attrs["global_symbol"])
        self.chosen.setdefault(symbol, LIBRARY)
        self.library[symbol] = family
        return FUNCS[family]



class _Builder:
    """Emits the calls of one Relax function; `w(name)` reads a weight from the tuple."""

    def __init__(self, spec: ProgramSpec, kernels: _Kernels, weights: relax.Var):
        self.spec, self.c, self.k, self.bb = spec, spec.config, kernels, kernels.bb
        self.weights = weights
        self.index = {s.name: i for i, s in enumerate(weight_specs(spec.config, spec.weight_dtype))}
        self._loaded: dict[str, relax.Expr] = {}
        self.owners = owner_layers(spec.config)

    def kernel(self, builder, *args, **kwargs) -> tirx.PrimFunc:
        """builder(*args, **kwargs) with the target's knobs (`schedules.options`): block sizes,
        splits, scan tile and chunk as the target's schedules expect. Built once per program
        (TVMScript parsing is most of the time of `build_program`)."""
        key = (builder, args, tuple(sorted(kwargs.items())))
        if key not in self.k.built:
            knobs = {**kwargs, **builder_knobs(builder, self.k.choices)}
            self.k.built[key] = build_for(builder, args, self.k.target, **knobs)
        return self.k.built[key]

    def w(self, name: str) -> relax.Expr:
        if name not in self._loaded:
            self._loaded[name] = self.bb.emit(relax.TupleGetItem(self.weights, self.index[name]))
        return self._loaded[name]

    def call(self, func, args, *outs):
        """call_tir of a kernel with fresh outputs given as (shape, dtype) pairs."""
        types = [_tensor(s, d) for s, d in outs]
        packed = self.k.library_function(func)
        if packed is not None:  # a vendor-library call (torch's BLAS) instead of our kernel
            result = self.bb.emit(relax.call_dps_packed(packed, list(args),
                                                        types[0] if len(types) == 1 else types))
        else:
            result = self.bb.emit(relax.call_tir(self.k(func), list(args),
                                                 types[0] if len(types) == 1 else types))
        if len(types) == 1:
            return result
        return [self.bb.emit(relax.TupleGetItem(result, i)) for i in range(len(types))]

    def inplace(self, func, args, indices, *outs):
        """call_tir_inplace: outs[i] aliases args[indices[i]] (or is fresh where -1)."""
        types = [_tensor(s, d) for s, d in outs]
        result = self.bb.emit(relax.call_tir_inplace(self.k(func), list(args), list(indices),
                                                     types[0] if len(types) == 1 else types))
        if len(types) == 1:
            return [result]
        return [self.bb.emit(relax.TupleGetItem(result, i)) for i in range(len(types))]

    def columns(self, x, start: int, width: int):
        """x[:, start:start + width] as its own contiguous tensor."""
        return self.bb.emit(relax.op.strided_slice(x, axes=[1], begin=[start], end=[start + width]))

    def reshape(self, x, shape):
        return self.bb.emit(relax.op.reshape(x, list(shape)))

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def sizes(self):
        c = self.c
        return (c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_dt_rank, c.mamba_d_conv,
                c.num_attention_heads, c.num_key_value_heads, c.qk_head_dim, c.v_dim)

    def rows(self, plan) -> int:
        return self.c.in_proj_rows_owner if plan.owns_kv else self.c.in_proj_rows_consumer

    def x_offset(self, plan) -> int:
        """Column of the SSM input x in the in_proj output (z follows it)."""
        c = self.c
        q = c.num_attention_heads * c.qk_head_dim
        kv = c.num_key_value_heads * (c.qk_head_dim + c.v_dim)
        return q + (kv if plan.owns_kv else 0)


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------

def _layers(g: _Builder, steps, h):
    """Every layer over the rows of `steps` from the embeddings h [T, H]; returns the final
    normed hidden [T, H]."""
    hn = g.call(g.kernel(norm.rmsnorm, g.c.hidden_size, F32, g.c.rms_norm_eps),
                [h, g.w("l0.input_norm")], ((steps.rows, g.c.hidden_size), F32))
    for plan in g.c.layer_plan():
        h, hn = layer(g, steps, plan, h, hn)
    return hn


def _weights_var(spec: ProgramSpec) -> relax.Var:
    types = [_tensor(s.shape, s.dtype) for s in weight_specs(spec.config, spec.weight_dtype)]
    return relax.Var("weights", relax.TupleType(types))


def _add_prefix(kernels: _Kernels, spec: ProgramSpec) -> None:
    c = spec.config
    weights = _weights_var(spec)
    M = c.num_memory_tokens
    with kernels.bb.function("prefix", [weights]):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            positions = g.bb.emit(relax.const(np.arange(M, dtype=np.int32)[None]))
            steps = SequenceSteps(g, M, positions, None, None)
            _layers(g, steps, g.w("meta"))
            out = g.bb.emit_output(relax.Tuple([
                relax.Tuple([steps.kv[p.index][0] for p in g.owners]),
                relax.Tuple([steps.kv[p.index][1] for p in g.owners]),
                relax.Tuple(steps.convs), relax.Tuple(steps.ssms)]))
        kernels.bb.emit_func_output(out)


def _cache_vars(c: HymbaConfig, spec: ProgramSpec, batch, cap) -> list[relax.Var]:
    """k and v cache variables for every owner layer, in owner order (`cache_shapes`)."""
    names = [f"{kv}_cache_{p.index}" for p in owner_layers(c) for kv in ("k", "v")]
    return [relax.Var(name, _tensor(shape, spec.cache_dtype))
            for name, shape in zip(names, cache_shapes(c, batch, cap))]


def _prefix_vars(c: HymbaConfig) -> list[relax.Var]:
    """The meta-token prefix state a prefill starts from: meta_k, meta_v (per owner layer
    [1, KV, M, d]), conv_in [1, K, C] and ssm_in [1, N, C] (per layer), as tuple arguments."""
    M, kvh, dq, dv = c.num_memory_tokens, c.num_key_value_heads, c.qk_head_dim, c.v_dim
    C, N, K, L = c.d_inner, c.mamba_d_state, c.mamba_d_conv, c.num_hidden_layers
    owners = owner_layers(c)
    return [relax.Var("meta_k", relax.TupleType([_tensor((1, kvh, M, dq)) for _ in owners])),
            relax.Var("meta_v", relax.TupleType([_tensor((1, kvh, M, dv)) for _ in owners])),
            relax.Var("conv_in", relax.TupleType([_tensor((1, K, C))] * L)),
            relax.Var("ssm_in", relax.TupleType([_tensor((1, N, C))] * L))]


def _unpack_prefix(g, prefix_vars) -> tuple[list, list, list, list]:
    """The prefix tuples' items (meta_k, meta_v, conv, ssm lists), as the steps take them."""
    return tuple([g.bb.emit(relax.TupleGetItem(t, j)) for j in range(len(t.ty.fields))]
                 for t in prefix_vars)


def _add_prefill(kernels: _Kernels, spec: ProgramSpec) -> None:
    c = spec.config
    H = c.hidden_size
    n, cap = tirx.Var("n", "int64"), tirx.Var("cap", "int64")
    ids = relax.Var("ids", _tensor((n,), I32))
    positions = relax.Var("positions", _tensor((1, n), I32))
    prefix_vars = _prefix_vars(c)
    caches = _cache_vars(c, spec, 1, cap)
    caches_t = relax.Var("caches", relax.TupleType([v.ty for v in caches]))
    weights = _weights_var(spec)
    with kernels.bb.function("prefill", [ids, positions, *prefix_vars, caches_t, weights]):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            item = lambda t, j: g.bb.emit(relax.TupleGetItem(t, j))  # noqa: E731
            prefix = _unpack_prefix(g, prefix_vars)
            row_caches = [item(caches_t, j) for j in range(len(caches))]
            h = g.call(g.kernel(embed.embedding, c.vocab_size, H, spec.weight_dtype, I32, F32),
                       [ids, g.w("embed")], ((n, H), F32))
            steps = SequenceSteps(g, n, positions, prefix, row_caches)
            hn = _layers(g, steps, h)
            out = g.bb.emit_output(relax.Tuple([hn, relax.Tuple(steps.caches),
                                                relax.Tuple(steps.convs), relax.Tuple(steps.ssms)]))
        kernels.bb.emit_func_output(out)


def _add_prefill_batched(kernels: _Kernels, spec: ProgramSpec, B: int) -> None:
    """prefill_b{B}: the prompts of B rows in one call (`PackedSteps`): per row its ids [n_r],
    positions [1, n_r] and row caches (capacity cap_r); the shared meta-token prefix state.
    Returns (the normed hidden of every row, packed [n_0 + ... + n_{B-1}, H], the caches of
    every row (row after row), the conv states and the SSM states, row after row)."""
    c = spec.config
    H = c.hidden_size
    ns = [tirx.Var(f"n{r}", "int64") for r in range(B)]
    ids = [relax.Var(f"ids{r}", _tensor((ns[r],), I32)) for r in range(B)]
    positions = [relax.Var(f"positions{r}", _tensor((1, ns[r]), I32)) for r in range(B)]
    prefix_vars = _prefix_vars(c)
    caches = [_cache_vars(c, spec, 1, tirx.Var(f"cap{r}", "int64")) for r in range(B)]
    caches_t = [relax.Var(f"caches{r}", relax.TupleType([v.ty for v in caches[r]]))
                for r in range(B)]
    weights = _weights_var(spec)
    with kernels.bb.function(f"prefill_b{B}", [*ids, *positions, *prefix_vars, *caches_t,
                                               weights]):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            item = lambda t, j: g.bb.emit(relax.TupleGetItem(t, j))  # noqa: E731
            prefix = _unpack_prefix(g, prefix_vars)
            rows = [SequenceSteps(g, ns[r], positions[r], prefix,
                                  [item(caches_t[r], j) for j in range(len(caches[r]))])
                    for r in range(B)]
            steps = PackedSteps(g, rows)
            packed_ids = g.bb.emit(relax.op.concat(ids, axis=0))
            h = g.call(g.kernel(embed.embedding, c.vocab_size, H, spec.weight_dtype, I32, F32),
                       [packed_ids, g.w("embed")], ((steps.rows, H), F32))
            hn = _layers(g, steps, h)
            out = g.bb.emit_output(relax.Tuple([hn, relax.Tuple(steps.row_caches),
                                                relax.Tuple(steps.convs), relax.Tuple(steps.ssms)]))
        kernels.bb.emit_func_output(out)


def prefill_batches(spec: ProgramSpec, target: tvm.target.Target) -> tuple[int, ...]:
    """The batch sizes that get a batched prefill function: the spec's `prefill_batches`, on
    CPU targets (on CUDA not yet: untested on a GPU; such a program prefills row by row)."""
    if target.kind.name != "llvm":
        return ()
    return spec.prefill_batches


def _add_logits(kernels: _Kernels, spec: ProgramSpec) -> None:
    c = spec.config
    H, V, wd = c.hidden_size, c.vocab_size, spec.weight_dtype
    for name in ("logits_last", "logits_all"):
        n = tirx.Var("n", "int64")
        hidden = relax.Var("hidden", _tensor((n, H)))
        weights = _weights_var(spec)
        with kernels.bb.function(name, [hidden, weights]):
            with kernels.bb.dataflow():
                g = _Builder(spec, kernels, weights)
                if name == "logits_last":
                    last = g.bb.emit(relax.op.strided_slice(hidden, axes=[0], begin=[n - 1], end=[n]))
                    logits = g.call(g.kernel(linear.gemv, 1, V, H, wd), [last, g.w("embed")],
                                    ((1, V), F32))
                else:
                    logits = g.call(g.kernel(linear.matmul, V, H, wd), [hidden, g.w("embed")],
                                    ((n, V), F32))
                out = g.bb.emit_output(logits)
            kernels.bb.emit_func_output(out)


def _add_decode(kernels: _Kernels, spec: ProgramSpec, B: int) -> None:
    c = spec.config
    H, C, N, K = c.hidden_size, c.d_inner, c.mamba_d_state, c.mamba_d_conv
    cap = tirx.Var("cap", "int64")
    cache_vars = _cache_vars(c, spec, B, cap)
    ids = relax.Var("ids", _tensor((B,), I32))
    pos = relax.Var("pos", _tensor((B,), I32))
    caches_t = relax.Var("caches", relax.TupleType([v.ty for v in cache_vars]))
    conv_t = relax.Var("conv", relax.TupleType([_tensor((B, K, C))] * c.num_hidden_layers))
    ssm_t = relax.Var("ssm", relax.TupleType([_tensor((B, N, C))] * c.num_hidden_layers))
    weights = _weights_var(spec)
    # num_input 0: every argument keeps its buffer across calls (the runtime's pooled decode
    # state, the weights), so on CUDA the whole step can be captured as one graph
    with kernels.bb.function(f"decode_b{B}", [ids, pos, caches_t, conv_t, ssm_t, weights],
                             attrs={"num_input": 0}):
        with kernels.bb.dataflow():
            g = _Builder(spec, kernels, weights)
            item = lambda t, j: g.bb.emit(relax.TupleGetItem(t, j))  # noqa: E731
            steps = DecodeSteps(g, B, pos, [item(caches_t, j) for j in range(len(cache_vars))],
                                [item(conv_t, i) for i in range(c.num_hidden_layers)],
                                [item(ssm_t, i) for i in range(c.num_hidden_layers)])
            h = g.call(g.kernel(embed.embedding, c.vocab_size, H, spec.weight_dtype, I32, F32),
                       [ids, g.w("embed")], ((B, H), F32))
            hn = _layers(g, steps, h)
            logits = steps.linear(c.vocab_size, H, hn, g.w("embed"))
            out = g.bb.emit_output(relax.Tuple([logits, relax.Tuple(steps.caches),
                                                relax.Tuple(steps.convs), relax.Tuple(steps.ssms)]))
        kernels.bb.emit_func_output(out)


def build_program(spec: ProgramSpec, target: tvm.target.Target,
                  variants: dict[str, str] | None = None, on_kernel=None, tuned_dir=None):
    """The Relax IRModule of `spec` for `target` and the schedule variant chosen per kernel
    symbol. `variants` maps a kernel family to a named schedule variant or a `Choice` (variant,
    rule knobs, builder knobs; "library": a vendor-BLAS call) (default: each family's
    default; "tuned": the record of the MetaSchedule database in `tuned_dir`, the default rule
    for a kernel it has no record of); `on_kernel(symbol)` is called as each kernel is
    scheduled."""
    bb = relax.BlockBuilder()
    kernels = _Kernels(bb, target, variants or {}, on_kernel, tuned_dir)
    _add_functions(kernels, spec)
    mod = bb.get()
    if kernels.library:  # the families of the kernels replaced by library calls (manifest)
        mod = mod.with_attr(LIBRARY_ATTR, kernels.library)
    return mod, dict(kernels.chosen)


def program_kernels(spec: ProgramSpec, target: tvm.target.Target,
                    variants: dict | None = None) -> list[tirx.PrimFunc]:
    """Every distinct kernel the program of `spec` calls on `target`, as ir/ built it (the
    target's and the variants' builder knobs, no schedule), in symbol order: what `tune`
    tunes."""
    kernels = _Kernels(relax.BlockBuilder(), target, variants or {}, scheduling=False)
    _add_functions(kernels, spec)
    return [kernels.unscheduled[s] for s in sorted(kernels.unscheduled)]


def _add_functions(kernels: _Kernels, spec: ProgramSpec) -> None:
    _add_prefix(kernels, spec)
    _add_prefill(kernels, spec)
    for b in prefill_batches(spec, kernels.target):
        _add_prefill_batched(kernels, spec, b)
    _add_logits(kernels, spec)
    for b in spec.decode_batches:
        _add_decode(kernels, spec, b)
