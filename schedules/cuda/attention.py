"""CUDA rules for the attention family (ir/attention.py): RoPE, flash prefill, split-K decode
with its combine kernel, and the in-place cache writes and fills.

Every kernel is one thread block per work item of its outer block (token; row x kv head x query
block; row x kv head x key split; row x kv head (x token)), the child blocks spread over the
block's lanes (`common.schedule_children`). The flash kernels keep the tiles of one online-softmax
step (scaled q, k, v, scores, running max / sum) in shared memory and each lane's slice of the
output accumulator in registers; the reductions of a step (q.k over the head dim, max and sum over
the key block, p.v over the key block) run serially inside a lane. The key-block loop and its
visibility test stay as ir/ wrote them, so a sliding-window block visits only the meta blocks and
the blocks of its window."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from hymba_compile.ir.attention import KEY_WALK_ATTR, REDUCE_ATTR

from ..registry import cuda_rule
from .common import chunk_for, schedule_children, to_shared

THREADS = 128


def prefill_threads(rows: int, cols: int) -> int:
    """Lanes of a flash prefill block for an accumulator tile [rows, cols]: 256 for Hymba's
    80 x 128 (128 lanes would need 168-252 registers each), 128 for small tiles (at 256 lanes
    ptxas gave a 32 x 32 tile 64 registers and a 4-byte spill on sm_80)."""
    return 256 if rows * cols >= 8192 else 128


def _tile(sch, block_name: str) -> list[int]:
    """Extents of the loops directly around a block that initialises an accumulator tile."""
    return [int(sch.get(l).extent) for l in sch.get_loops(sch.get_sblock(block_name))
            if sch.get(l).kind != tirx.ForKind.THREAD_BINDING][-2:]


@cuda_rule("rope", "token_lanes")
def rope_token_lanes(func, target):
    """One block per token; cos/sin of the position computed once into shared memory, then every
    rotated q/k element and copied v element a lane."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("token"), THREADS)
    to_shared(sch, {"cos_sin": ("cs", "sn")})
    return sch


@cuda_rule("rope_cache_write", "token_lanes")
def rope_cache_token_lanes(func, target):
    """As `rope`'s: a block per row, cos/sin in shared memory, then every rotated q and k
    element and copied v element a lane, k and v stored straight into their cache slot."""
    # a copy: with one grid loop the schedule binds it in place (no fuse copies the loop nest)
    # and the caller's PrimFunc would come back already scheduled
    sch = s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(func)), enable_check=False)
    schedule_children(sch, sch.get_sblock("token"), THREADS)
    to_shared(sch, {"cos_sin": ("cs", "sn")})
    return sch


# the tiles in shared memory (writer block -> buffers): everything the lanes exchange
_PREFILL_SHARED = {"load_q": ("qs",), "load_k": ("kt",), "load_v": ("vt",), "score": ("sc",),
                   "init_stats": ("mx", "sm"), "max": ("al",)}


@cuda_rule("attention_prefill", "flash_lanes")
def prefill_flash_lanes(func, target):
    """Flash prefill: one block (`prefill_threads` lanes) per (row, kv head, query block): the
    G query heads sharing the kv head (G x `block_q` rows) over `block_k`-key tiles, each k/v
    tile loaded once for the group.
    Declines the "branch" key walk (a branch around shared tiles cannot hold barriers): build
    with `schedules.kernel_options("attention_prefill", target)`."""
    if str(func.attrs.get(KEY_WALK_ATTR, "branch")) != "compact":
        return None
    sch = s_tir.Schedule(func, enable_check=False)
    rows, cols = _tile(sch, "init_acc")
    threads = prefill_threads(rows, cols)
    chunk = chunk_for(rows, cols, threads)
    if chunk is None:  # more query rows (G x block_q) than lanes
        return None
    acc = {"init_acc": ((), chunk), "rescale": ((), chunk), "pv": ((0,), chunk),
           "store": ((), chunk)}
    schedule_children(sch, sch.get_sblock("flash"), threads, acc)
    to_shared(sch, _PREFILL_SHARED)
    return sch


_DECODE_SHARED = {"load_q": ("qs",), "load_k": ("kt",), "load_v": ("vt",), "score": ("sc",),
                  "init_stats": ("mx", "sm"), "max": ("mn", "al"), "sum": ("sn",)}


@cuda_rule("attention_decode", "split_lanes")
def decode_split_lanes(func, target):
    """Flash-decoding: one block per (row, kv head, key split), the G query heads of the kv head
    together (k/v tiles loaded once for the group); then one block per (row, head) merging the
    splits' partial softmax states. Declines the "tile" reduction form (build with
    `schedules.kernel_options("attention_decode", target)`)."""
    if str(func.attrs.get(REDUCE_ATTR, "tile")) != "registers":
        return None
    sch = s_tir.Schedule(func, enable_check=False)
    rows, cols = _tile(sch, "init_acc")
    chunk = chunk_for(rows, cols, THREADS)
    combine_chunk = chunk_for(1, _tile(sch, "combine_init")[-1], THREADS)
    if chunk is None or combine_chunk is None:  # more query heads per kv head than lanes
        return None
    acc = {"init_acc": ((), chunk), "rescale": ((), chunk), "pv": ((1,), chunk),
           "store_acc": ((), chunk)}
    schedule_children(sch, sch.get_sblock("split"), THREADS, acc)
    to_shared(sch, _DECODE_SHARED)
    acc = {"combine_init": ((), combine_chunk), "combine_acc": ((0,), combine_chunk),
           "combine_out": ((), combine_chunk)}
    schedule_children(sch, sch.get_sblock("combine"), THREADS, acc)
    return sch


@cuda_rule("kv_cache_write", "lanes")
def cache_write_lanes(func, target):
    """One block per (row, kv head); the head's k and v elements a lane each."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("write"), THREADS)
    return sch


@cuda_rule("kv_cache_fill", "lanes")
def cache_fill_lanes(func, target):
    """One block per (row, kv head, token); the token's k and v elements a lane each."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("fill"), THREADS)
    return sch
