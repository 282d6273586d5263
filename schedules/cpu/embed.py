"""CPU schedules for the model wrap (ir/embed.py): the embedding gather, and the final RMSNorm +
tied lm_head as a GEMV (decode) or a GEMM (prefill).

lm_head: the head weight [vocab, hidden] is the bulk (102 MB in bf16), read once per call. Vocab
rows go in tiles of 3 (3 divides 32001), the tiles in parallel; inside a tile the dot products
accumulate in fp32 vector registers along hidden (rfactor), for every (vocab row, batch row)
pair at once, each bf16 weight vector widened in registers once; a short horizontal sum ends
each logit. The partial sums are small default-scope buffers compacted to the tile, which LLVM
keeps in registers ("local" scope would put them in TVMBackendAllocWorkspace memory per tile).
The norm runs first (rows in parallel for prefill, serially for decode's few rows).
"""

from __future__ import annotations

from tvm import s_tir

from hymba_compile.ir import embed as ir_embed
from hymba_compile.ir.linear import PAD_ROWS

from ..registry import cpu_rule
from . import dot
from .rows import divisor, schedule_norm_rows
from .tiles import gemm_block


def _blocks(sch):
    return {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}


@cpu_rule("embedding", "rows")
def embedding_rows(func, target, lanes: int = 64, parallel: bool = True):
    """Ours: rows (tokens) in parallel, each row a vectorised contiguous copy of one table row."""
    sch = s_tir.Schedule(func)
    out = _blocks(sch)["out"]
    i, j = sch.get_loops(out)
    if parallel:
        sch.parallel(i)
    width = int(sch.get(j).extent)
    _, vec = sch.split(j, factors=[None, divisor(width, (lanes, 32, 16, 8, 4, 2))])
    sch.vectorize(vec)
    return sch


@cpu_rule("embedding", "rows_serial")
def embedding_rows_serial(func, target):
    """The same without the thread pool: for a decode step's few ids the parallel launch (a few
    microseconds) costs more than the copy (3.2 KB per bf16 row)."""
    return embedding_rows(func, target, parallel=False)


STACK_LIMIT = 1024  # bytes: TVM keeps constant allocations smaller than this on the stack


def head_tile(vocab: int, batch: int, hidden: int) -> tuple[int, int]:
    """(vocab rows per tile, vector lanes) of the decode GEMV.

    Batch 1-2 streams the weight from DRAM: one weight row at a time per thread (one sequential
    stream; 3 interleaved rows ran 2-3x slower: 6-8 ms vs 2.5-2.8 ms at batch 1) and 32 lanes
    (two FMA chains per batch row), as the linear family found (schedules/cpu/linear.py).
    Batch >= 3 is bound by FMAs and activation loads (at batch 8 the activations, 51 KB of fp32,
    come from L2): 3 weight rows per tile reuse each activation load three times (batch 8: 3 rows
    7.7-8 ms, 1 row 13-13.5 ms). The accumulators (rows x batch x lanes fp32) must stay under
    TVM's 1 KiB stack-allocation limit (above it they are TVMBackendAllocWorkspace'd per tile and
    live in memory) and, with the widened weight vectors and one activation, within the 32
    vector registers: so 8 lanes at batch >= 6. Rows must divide the vocab (no tail predicate; 3
    divides Hymba's 32001), lanes the hidden size."""
    if batch <= 2:
        return 1, divisor(hidden, (32, 16, 8, 4, 2))
    widest = divisor(hidden, (16, 8, 4, 2))
    best = (1, widest)
    for n_lanes in sorted({widest, min(widest, 8)}, reverse=True):
        for rows in (4, 3, 2):
            fits = rows * batch * n_lanes * 4 < STACK_LIMIT and rows * batch + rows + 1 <= 30
            if vocab % rows == 0 and fits and rows > best[0]:
                best = (rows, n_lanes)
    return best


def schedule_head(sch, logits, rows: int, lanes: int, symbolic_rows: bool = False) -> None:
    """GEMV/GEMM over the head weight for the `logits` block (loops i, v, k).

    Decode (static batch): v_tile (parallel), k_outer, i (unrolled), v_row (unrolled), k_lane
    (vector): per k step the tile's weight vectors are widened once and stay in registers, and
    each activation vector is loaded once and used for every row of the tile.
    `symbolic_rows` (the `rows` variant of prefill): v_tile (parallel), i, k_outer, v_row,
    k_lane: the tile's weight rows stay in L1 while every position passes over them."""
    i, v, k = sch.get_loops(logits)
    vo, vi = sch.split(v, factors=[None, rows])
    ko, ki = sch.split(k, factors=[None, lanes])
    rf = sch.rfactor(ki, factor_axis=2)  # partial sums [i, v, lane]: each vector contiguous
    i, vo, vi, ko, ki = sch.get_loops(rf)
    if symbolic_rows:
        sch.reorder(vo, i, ko, vi, ki)
        anchor = i
    else:
        sch.reorder(vo, ko, i, vi, ki)
        sch.unroll(i)
        anchor = vo
    sch.reverse_compute_at(logits, anchor)
    sch.vectorize(ki)
    sch.parallel(vo)
    sch.decompose_reduction(rf, ko)
    sch.unroll(vi)
    # Final horizontal sums: reverse_compute_at made the loops in block-iter order (lane,
    # [batch row,] vocab row): lanes outermost, the independent sums unrolled inside.
    for loop in sch.get_loops(logits)[2 if symbolic_rows else 1:][1:]:
        sch.unroll(loop)


@cpu_rule("lm_head_decode", "bf16dot", grid={"rows": (None, 1, 3)})
def lm_head_bf16dot(func, target, rows: int | None = None):
    """bf16 on a CPU with avx512_bf16 (default there; declines elsewhere): the norm serially,
    then the head GEMV with the dot-product instruction (schedules/cpu/dot.py). The
    normalised rows are bf16 already (HymbaRMSNorm's output dtype), so this is the same
    arithmetic as `gemv`, in pairs."""
    sch = s_tir.Schedule(func)
    b = _blocks(sch)
    batch, vocab, hidden = (int(sch.get(loop).extent) for loop in sch.get_loops(b["logits"]))
    if "head_f32" not in b or not dot.applies("bfloat16", hidden, target):
        return None
    rows = dot.gemv_dot_rows(batch, vocab, rows)
    if rows is None or func.attrs is None or ir_embed.EPS_ATTR not in func.attrs:
        return None
    # rebuilt with the normalised rows in a stage `xb` (TVM keeps the bf16 intermediate `xn`
    # in fp32 storage, which the instruction cannot read; measured: LowerIntrin rejects it)
    twin = ir_embed.lm_head_decode(batch, hidden, vocab, "bfloat16",
                                   float(func.attrs[ir_embed.EPS_ATTR]), dot_layout=True)
    sch = s_tir.Schedule(twin.with_attr("global_symbol", func.attrs["global_symbol"]))
    b = _blocks(sch)
    sch.compute_inline(b["xn"])
    dot.gemv_dot_block(sch, b["logits"], batch, vocab, rows)
    return sch


@cpu_rule("lm_head_prefill", "bf16dot", grid={"mr": (2, 3, 4, 6), "nr": (2, 3, 4)})
def lm_head_gemm_bf16dot(func, target, mr: int = 3, nr: int = 4, nb: int = 64):
    """bf16 on a CPU with avx512_bf16: the kernel rebuilt in the instruction's layout
    (ir/embed.py's `dot_layout`: rows padded), the norm fused into the padded rows, then the
    linear family's register-tiled dot-product GEMM (`dot.gemm_dot_block`)."""
    sch = s_tir.Schedule(func)
    b = _blocks(sch)
    _, vocab, hidden = (sch.get(loop).extent for loop in sch.get_loops(b["logits"]))
    vocab, hidden = int(vocab), int(hidden)
    if "head_f32" not in b or not dot.applies("bfloat16", hidden, target):
        return None
    tile = dot.gemm_dot_tile(vocab, mr, nr, PAD_ROWS, nb)
    if tile is None:
        return None
    if func.attrs is None or ir_embed.EPS_ATTR not in func.attrs:
        return None  # built without its eps: cannot be rebuilt in the dot layout
    eps = float(func.attrs[ir_embed.EPS_ATTR])
    twin = ir_embed.lm_head_prefill(hidden, vocab, "bfloat16", eps, dot_layout=True)
    sch = s_tir.Schedule(twin.with_attr("global_symbol", func.attrs["global_symbol"]))
    b = _blocks(sch)
    sch.compute_inline(b["xn"])
    xn_ss = b["xn_ss"]
    sch.parallel(sch.get_loops(xn_ss)[0])
    dot.gemm_dot_block(sch, *tile, out="logits")
    return sch


@cpu_rule("lm_head_decode", "gemv", grid={"rows": (None, 1, 3), "lanes": (None, 8, 16, 32)})
def lm_head_gemv(func, target, rows: int | None = None, lanes: int | None = None):
    """Ours: the norm serially (a few rows), then the head GEMV, parallel over vocab tiles, the
    bf16 weights widened in registers (see `schedule_head`; `rows` vocab rows per tile and
    `lanes`, None: `head_tile`'s measured choice by batch)."""
    sch = s_tir.Schedule(func)
    b = _blocks(sch)
    schedule_norm_rows(sch, [b["xn_ss"], b["xn"]], parallel=False)
    if "head_f32" in b:
        sch.compute_inline(b["head_f32"])
    batch, vocab, hidden = (int(sch.get(loop).extent) for loop in sch.get_loops(b["logits"]))
    tile_rows, tile_lanes = head_tile(vocab, batch, hidden)
    schedule_head(sch, b["logits"], rows or tile_rows, lanes or tile_lanes)
    return sch


@cpu_rule("lm_head_prefill", "tiles", grid={"mr": (4, 6, 8), "lanes": (8, 16)})
def lm_head_gemm_tiles(func, target, mr: int = 6, lanes: int = 8):
    """Ours: the norm over rows in parallel, then the head GEMM with the linear family's
    register-tiled schedule (`schedules.cpu.tiles.gemm_block`: 6 positions x 3 weight rows x
    8 lanes of accumulators, blocks of weight rows in parallel, the position tail peeled off);
    the bf16 weights widened in registers, each widening shared by 6 positions."""
    sch = s_tir.Schedule(func)
    b = _blocks(sch)
    schedule_norm_rows(sch, [b["xn_ss"], b["xn"]], parallel=True)
    if "head_f32" in b:
        sch.compute_inline(b["head_f32"])
    _, vocab, hidden = (sch.get(loop).extent for loop in sch.get_loops(b["logits"]))
    gemm_block(sch, b["logits"], int(vocab), int(hidden), mr=mr, lanes=lanes)
    return sch


@cpu_rule("lm_head_prefill", "rows")
def lm_head_gemm_rows(func, target):
    """Kept for comparison (and independent of the linear family's code): tiles of 3 weight
    rows in parallel, each tile widened to fp32 once into an L1-resident buffer (the `head_f32`
    stage computed at the tile) and applied to every position in turn, one position at a time
    (4 loads per 3 FMAs). Tiling positions as well needs a tail predicate for the symbolic
    count; without the linear family's layout trick TVM then sizes the accumulators
    symbolically and puts them in TVMBackendAllocWorkspace memory (~10x slower)."""
    sch = s_tir.Schedule(func)
    b = _blocks(sch)
    schedule_norm_rows(sch, [b["xn_ss"], b["xn"]], parallel=True)
    _, vocab, hidden = (sch.get(loop).extent for loop in sch.get_loops(b["logits"]))
    vocab, hidden = int(vocab), int(hidden)
    schedule_head(sch, b["logits"], divisor(vocab, (3, 4, 2)), divisor(hidden, (16, 8, 4, 2)),
                  symbolic_rows=True)
    if "head_f32" in b:
        wf = b["head_f32"]
        sch.compute_at(wf, sch.get_loops(b["logits"])[0])
        inner = sch.get_loops(wf)[-1]
        width = int(sch.get(inner).extent)
        _, vec = sch.split(inner, factors=[None, divisor(width, (64, 32, 16, 8, 4, 2))])
        sch.vectorize(vec)
    return sch
