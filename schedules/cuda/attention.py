"""CUDA rules for the attention family (ir/attention.py): RoPE, flash prefill, split-K decode
with its combine kernel, and the in-place cache writes and fills.

Every kernel is one thread block per work item of its outer block (token; row x head x query
block; row x kv head x key split; row x kv head (x token)), the child blocks spread over the
block's lanes (`common.schedule_children`). The flash kernels keep the tiles of one online-softmax
step (scaled q, k, v, scores, running max / sum) in shared memory and each lane's slice of the
output accumulator in registers; the reductions of a step (q.k over the head dim, max and sum over
the key block, p.v over the key block) run serially inside a lane. The key-block loop and its
visibility test stay as ir/ wrote them, so a sliding-window block visits only the meta blocks and
the blocks of its window."""

from __future__ import annotations

from tvm import s_tir

from ir.attention import KEY_WALK_ATTR

from ..registry import cuda_rule
from .common import schedule_children, set_scope

THREADS = 128


def _root_children(sch):
    return sch.get_child_blocks(sch.get_sblock("root"))


@cuda_rule("rope", "token_lanes")
def rope_token_lanes(func, target):
    """One block per token; cos/sin of the position computed once into shared memory, then every
    rotated q/k element and copied v element a lane."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("token"), THREADS, {})
    set_scope(sch, "cos_sin", "shared", 0)
    set_scope(sch, "cos_sin", "shared", 1)
    return sch


# own loops of each flash child kept serial inside a lane (indices into its own loops)
_PREFILL_SERIAL = {"score": (1,), "max": (0,), "sum": (0,), "pv": (0,)}
_PREFILL_SHARED = {"load_q": 0, "load_k": 0, "load_v": 0, "score_init": 0, "init_stats": (0, 1),
                   "max_init": 0, "alpha": 0}


def _shared(sch, writers: dict) -> None:
    for name, idx in writers.items():
        for i in (idx if isinstance(idx, tuple) else (idx,)):
            set_scope(sch, name, "shared", i)


@cuda_rule("attention_prefill", "flash_lanes")
def prefill_flash_lanes(func, target):
    """Flash prefill: one block per (row, head, query block) over `block_q` x `block_k` tiles.
    Declines the "branch" key walk (a branch around shared tiles cannot hold barriers): build
    with `schedules.kernel_options("attention_prefill", target)`."""
    if str(func.attrs.get(KEY_WALK_ATTR, "branch")) != "compact":
        return None
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("flash"), THREADS, _PREFILL_SERIAL)
    _shared(sch, _PREFILL_SHARED)
    return sch


_DECODE_SERIAL = {"score": (1,), "pv": (1,)}
_DECODE_SHARED = {"load_q": 0, "load_k": 0, "load_v": 0, "score_init": 0, "init_stats": (0, 1),
                  "max": (0, 1)}


@cuda_rule("attention_decode", "split_lanes")
def decode_split_lanes(func, target):
    """Flash-decoding: one block per (row, kv head, key split), the G query heads of the kv head
    together (k/v tiles loaded once for the group); then one block per (row, head) merging the
    splits' partial softmax states."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("split"), THREADS, _DECODE_SERIAL)
    _shared(sch, _DECODE_SHARED)
    schedule_children(sch, sch.get_sblock("combine"), THREADS, {"combine_acc": (0,)})
    return sch


@cuda_rule("kv_cache_write", "lanes")
def cache_write_lanes(func, target):
    """One block per (row, kv head); the head's k and v elements a lane each."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("write"), THREADS, {})
    return sch


@cuda_rule("kv_cache_fill", "lanes")
def cache_fill_lanes(func, target):
    """One block per (row, kv head, token); the token's k and v elements a lane each."""
    sch = s_tir.Schedule(func, enable_check=False)
    schedule_children(sch, sch.get_sblock("fill"), THREADS, {})
    return sch
