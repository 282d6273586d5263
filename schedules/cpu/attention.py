"""CPU schedules for the attention family (ir/attention.py): RoPE, flash prefill, split decode and
the cache writes.

The attention kernels are written as TVMScript loops whose leaves are opaque sblocks that update
local accumulators in place (online softmax). `sch.vectorize`/`sch.parallel` refuse such blocks
("not a local complete block": a block that reads and writes one buffer), so these rules build
the Schedule with `enable_check=False`. The caller's duty that this shifts onto us is that every
loop we vectorise or parallelise has independent iterations: each vectorised loop below indexes a
distinct element of every buffer it writes with its loop variable (lanes never collide), and each
parallel loop owns a distinct (row, head, query block) or (row, kv head, split) of the outputs and
of the scratch it writes. The property tests run every variant against the reference.
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from ..registry import cpu_rule


def _schedule(func) -> s_tir.Schedule:
    return s_tir.Schedule(func, enable_check=False)


def _loops(sch, name):
    return sch.get_loops(sch.get_sblock(name))


def _vectorize_last(sch, names):
    for name in names:
        sch.vectorize(_loops(sch, name)[-1])


def _split_exact(sch, loop, factor: int):
    """split(loop, [None, factor]) when factor divides the extent; else leave it whole."""
    extent = int(sch.get(loop).extent)
    if extent % factor or extent == factor:
        return None, loop
    return tuple(sch.split(loop, factors=[None, factor]))


# ---------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------

@cpu_rule("rope", "tokens")
def rope_tokens(func, target):
    """Ours: (row, token) pairs in parallel; the cos/sin loop unrolled (the inv_freq table is a
    Select chain that folds to constants), the per-head rotations vectorised over the half
    head dim, the v copy over the v dim."""
    sch = _schedule(func)
    b, t = _loops(sch, "token")
    sch.parallel(sch.fuse(b, t))
    sch.unroll(_loops(sch, "cos_sin")[-1])
    names = ["q_rope"] + [n for n in ("k_rope", "v_copy") if _has(sch, n)]
    _vectorize_last(sch, names)
    return sch


@cpu_rule("rope_cache_write", "rows")
def rope_cache_rows(func, target):
    """As `rope`'s rule per row (rows in parallel, cos/sin unrolled, rotations and the v copy
    vectorised), the k and v rows written straight into their cache slot."""
    # a copy: with one grid loop the schedule annotates it in place (see the CUDA rule)
    sch = _schedule(tvm.ir.load_json(tvm.ir.save_json(func)))
    sch.parallel(_loops(sch, "token")[0])
    sch.unroll(_loops(sch, "cos_sin")[-1])
    _vectorize_last(sch, ["q_rope", "k_rope", "v_copy"])
    return sch


def _has(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - s_tir raises a generic error for a missing block
        return False


# ---------------------------------------------------------------------------------------------
# Prefill
# ---------------------------------------------------------------------------------------------

def _flash(func, query_rows: int = 4, v_lanes: int = 64, parallel: bool = True, acc_vectors: int = 16):
    sch = _schedule(func)
    outer = _loops(sch, "flash")
    fused = sch.fuse(*outer)
    if parallel:
        sch.parallel(fused)
    # lane loops: the query axis of the score tile, the head dims elsewhere
    _vectorize_last(sch, ["init_stats", "init_acc", "load_q", "load_k", "load_v", "score_init",
                          "mask", "max_init", "max", "alpha", "prob", "sum", "rescale", "store"])
    # scores: key_rows keys x all queries of the block in registers, the head dim walked once
    jj, d, ii = _loops(sch, "score")[-3:]
    # key rows x (block_q / 16) vectors of accumulators: about `acc_vectors` of the 32 registers
    key_rows = max(1, acc_vectors * 16 // int(sch.get(ii).extent))
    jo, ji = _split_exact(sch, jj, key_rows)
    if jo is not None:
        sch.reorder(jo, d, ji, ii)
        sch.unroll(ji)
    sch.vectorize(ii)
    # p @ v: query_rows queries x v_lanes of the v dim in registers, the keys walked once
    jj, ii, e = _loops(sch, "pv")[-3:]
    io, ii2 = _split_exact(sch, ii, query_rows)
    eo, ei = _split_exact(sch, e, v_lanes)
    order = [x for x in (io, eo) if x is not None] + [jj, ii2, ei]
    sch.reorder(*order)
    if io is not None:
        sch.unroll(ii2)
    sch.vectorize(ei)
    return sch


@cpu_rule("attention_prefill", "flash")
def flash(func, target):
    """Ours: (row, head, query block) in parallel; per key block the score tile is computed with
    a few keys x the query block (vectorised over queries, 16 vectors) held in registers,
    softmax steps vectorised over queries, and p @ v with 4 queries x 64 v lanes in registers."""
    return _flash(func)


@cpu_rule("attention_prefill", "flash_wide")
def flash_wide(func, target):
    """As `flash` with 8 query rows x 32 v lanes in p @ v."""
    return _flash(func, query_rows=8, v_lanes=32)


# ---------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------

def _decode(func, parallel: bool = True):
    sch = _schedule(func)
    b, g, c = _loops(sch, "split")
    fused = sch.fuse(b, g, c)
    if parallel:
        sch.parallel(fused)
    _vectorize_last(sch, ["init_acc", "load_q", "load_k", "load_v", "score_init", "score",
                          "score_mask", "prob", "rescale", "pv", "store_acc", "combine_init",
                          "combine_acc", "combine_out"])
    # scores: all query heads of the kv head x the key block in registers, the head dim walked
    # once (k^T tile: lanes are keys, no horizontal sums)
    gg, d, jj = _loops(sch, "score")[-3:]
    sch.reorder(d, gg, jj)
    sch.unroll(gg)
    return sch


@cpu_rule("attention_decode", "split")
def decode_split(func, target):
    """Ours: (row, kv head, split) in parallel, each streaming its keys once for all the query
    heads of the kv head; dot products as lane partial sums, p @ v vectorised over the v dim;
    the tiny merge of the splits runs serially afterwards."""
    return _decode(func)


@cpu_rule("attention_decode", "serial")
def decode_serial(func, target):
    """`split` on one thread (no pool wake-up; for short caches)."""
    return _decode(func, parallel=False)


# ---------------------------------------------------------------------------------------------
# Cache writes
# ---------------------------------------------------------------------------------------------

@cpu_rule("kv_cache_write", "vector")
def cache_write(func, target):
    """Ours: one thread (a few hundred values), rows vectorised over the head dims."""
    sch = _schedule(func)
    _vectorize_last(sch, ["write_k", "write_v"])
    return sch


@cpu_rule("kv_cache_fill", "rows")
def cache_fill(func, target):
    """Ours: (row, kv head, token) in parallel, each row copy vectorised."""
    sch = _schedule(func)
    sch.parallel(sch.fuse(*_loops(sch, "fill")))
    _vectorize_last(sch, ["fill_k", "fill_v"])
    return sch
