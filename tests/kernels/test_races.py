"""Data races and barrier divergence of the CUDA schedules, on the Oclgrind simulator: every
builder family at a tiny shape, built with the CUDA knobs (smaller tiles where a tile size is a
knob: the race freedom of a schedule does not depend on them), scheduled by the default CUDA
rule, lowered to OpenCL and run once with OCLGRIND_DATA_RACES=1 (which also reports out-of-bounds
accesses: it found dlight's GEMV writing past the end of y). Slow (a simulator): -m slow."""

from __future__ import annotations

import pytest

from hymba_compile.bench.cuda_kernels import make_inputs
from hymba_compile.pocl import oclgrind_check, pocl_unavailable_reason
from hymba_compile.ir import attention as A
from hymba_compile.ir import combine, conv, embed, linear, norm, scan
from hymba_compile.schedules import named_target
from hymba_compile.schedules.options import build_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    pocl_unavailable_reason("oclgrind") is not None,
    reason=f"Oclgrind unavailable: {pocl_unavailable_reason('oclgrind')}")]

CUDA = named_target("cuda:sm_90")
SMALL_TILES = {"attention_prefill": dict(block_q=8, block_k=8),
               "attention_decode_sliding": dict(splits=2, block_k=4),
               "attention_decode_global": dict(splits=2, block_k=4)}
# (builder, tiny args): every family of ir/, the prefill attention with a window and global
CASES = [
    (A.rope_qkv, (1, 2, 1, 4, 4, 18, 10000.0, True, "float32")),
    (A.attention_prefill, (1, 2, 1, 4, 4, 2, 1, "float32")),
    (A.attention_prefill, (1, 2, 1, 4, 4, None, 1, "float32")),
    (A.attention_decode_sliding, (1, 2, 1, 4, 4, 4, 1, "float32")),
    (A.attention_decode_global, (1, 2, 1, 4, 4, None, "float32")),
    (A.kv_cache_write_sliding, (1, 1, 4, 4, 2, 1, "float32")),
    (A.kv_cache_write_global, (1, 1, 4, 4, None, "float32")),
    (A.kv_cache_fill_sliding, (1, 1, 4, 4, 2, 1, "float32")),
    (A.kv_cache_fill_global, (1, 1, 4, 4, None, "float32")),
    (combine.norm_average, (8, "float32")),
    (combine.hybrid_combine_decode, (1, 8, 4, "float32")),
    (combine.hybrid_combine_decode, (3, 33, 5, "bfloat16")),  # one kernel: stats per block
    (combine.gate_up_decode, (1, 4, 8, "float32")),
    (combine.gate_up_prefill, (4, 8, "float32")),
    (conv.causal_conv1d, (8, 4, "float32")),
    (conv.causal_conv1d_step, (8, 4, "float32")),
    (embed.embedding, (10, 8, "float32", "int32")),
    (embed.lm_head_decode, (1, 8, 10, "float32")),
    (embed.lm_head_prefill, (8, 10, "float32")),
    (linear.gemv, (1, 8, 16, "float32")),  # dlight's GEMV wrote y[8..15] here (a 16-row tile)
    (linear.gemv, (3, 132, 40, "bfloat16")),
    (linear.matmul, (13, 20, "bfloat16")),
    (combine.gate_up_decode, (3, 12, 9, "float32")),
    (embed.lm_head_decode, (2, 12, 7, "float32")),
    (linear.matmul, (8, 16, "float32")),
    (norm.rmsnorm, (16, "float32")),
    (norm.add_rmsnorm, (16, "float32")),
    (norm.add_rmsnorm, (70, "bfloat16")),  # row_block: lanes revisit columns (70 > 32 lanes)
    (scan.selective_scan, (8, 2, "float32")),
    (scan.selective_scan_chunked, (8, 2, "float32")),
    (scan.selective_state_update, (8, 2, "float32")),
    (scan.ssm_input_split, (3, 2, "float32")),
]


def _inputs(func):
    """Tensors for every parameter (`bench.cuda_kernels.make_inputs`): symbolic extents 3,
    floats random, integers 1 (a valid position, pad count, cache count or token id at these
    sizes)."""
    ones = {p.name: (1, 1) for p in func.params if str(p.dtype).startswith("int")}
    return make_inputs(func, {}, ones)


@pytest.mark.parametrize("builder, args", CASES,
                         ids=[f"{b.__name__}{i}" for i, (b, _) in enumerate(CASES)])
def test_no_race_or_divergence(builder, args):
    func = build_for(builder, args, CUDA, **SMALL_TILES.get(builder.__name__, {}))
    tensors = _inputs(func)
    report = oclgrind_check(func, *tensors, target="cuda:sm_90")
    assert report == "", f"{func.attrs['global_symbol']}:\n{report}"
