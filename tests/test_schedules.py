"""The schedule seams: rules per target kind and arch, fall-through to dlight, the target's
builder knobs, coverage (which kernels are really scheduled on a target), and the structure of
the sliding-window prefill kernel's key loop."""

from __future__ import annotations

import pytest
import tvm_ffi
from tvm import tirx

from hymba_compile.tir_eval import evaluate
from hymba_compile.ir import attention as A
from hymba_compile.ir.norm import rmsnorm
from hymba_compile.ir.scan import selective_state_update
from hymba_compile.schedules import named_target
from hymba_compile.schedules.coverage import coverage, examples, families, host_stores, uncovered
from hymba_compile.schedules.options import BUILDER_FAMILY, build_for, kernel_options, scan_algorithm
from hymba_compile.schedules.registry import UNSCHEDULED, cuda_rule, registered, schedule, variants

CUDA = named_target("cuda:sm_90")
CPU = named_target("cpu")


def test_every_family_is_scheduled_for_cuda_and_cpu():
    """Every builder example of ir/ has a real schedule on CUDA (all work under thread
    bindings) and on the CPU; the list of gaps is computed, not kept by hand."""
    assert uncovered("cuda:sm_90") == []
    assert uncovered("cpu") == []
    assert all(families("cuda:sm_90").values())
    own = {c.family for c in coverage("cuda:sm_90") if c.variant != "dlight"}
    # the families whose algorithms are ours on the GPU (the rest are dlight's stock rules)
    assert {"rope", "attention_prefill", "attention_decode", "kv_cache_write", "kv_cache_fill",
            "selective_scan", "selective_scan_chunked", "selective_state_update",
            "causal_conv1d", "causal_conv1d_step"} <= own


def test_host_stores_sees_an_unscheduled_kernel():
    """The coverage check can fail: the IR as written puts every store on the host."""
    func = selective_state_update(64, 4)
    mod, variant = schedule(func, CUDA, UNSCHEDULED)
    assert variant == UNSCHEDULED and host_stores(mod["main"]) > 0
    mod, variant = schedule(build_for(selective_state_update, (64, 4), CUDA), CUDA)
    assert variant == "channel_lanes" and host_stores(mod["main"]) == 0


def test_builder_family_table_matches_the_kernels():
    for builder, args in examples():
        if builder.__name__ in BUILDER_FAMILY:
            func = build_for(builder, tuple(args), CUDA)
            assert str(func.attrs["hymba.kernel"]) == BUILDER_FAMILY[builder.__name__]


def test_the_target_chooses_the_knobs():
    assert kernel_options("attention_prefill", CPU) == {}
    assert kernel_options("attention_prefill", CUDA)["key_walk"] == "compact"
    assert kernel_options("attention_decode", CUDA)["reduce_in"] == "registers"
    assert (scan_algorithm(CPU), scan_algorithm(CUDA)) == ("sequential", "chunked")
    # explicit arguments win over the target's knobs
    func = build_for(A.attention_prefill, (1, 2, 1, 8, 8, 4, 2, "float32"), CUDA, block_q=8)
    assert "_q8k16_compact_" in str(func.attrs["global_symbol"])


def test_a_cpu_form_kernel_is_declined_on_cuda_not_miscompiled():
    """The flash rule declines the CPU's branchy key walk (None: fall through to dlight), and
    dlight leaves the hand-written kernel unbound: the coverage check sees its host stores."""
    cpu_form = A.attention_prefill(1, 2, 1, 8, 8, 4, 2, "float32")
    mod, variant = schedule(cpu_form, CUDA)
    assert variant == "dlight" and host_stores(mod["main"]) > 0


def test_rules_are_keyed_by_arch_and_fall_through():
    family = "test_only_family"

    @cuda_rule(family, "hopper_only", min_arch=90)
    def hopper_only(func, target):  # pragma: no cover - never applied here
        return None

    @cuda_rule(family, "declines")
    def declines(func, target):
        return None

    assert "hopper_only" in variants(family, named_target("cuda:sm_90"))
    assert "hopper_only" not in variants(family, named_target("cuda:sm_80"))
    assert list(registered(family, named_target("cuda:sm_86"))) == ["declines"]
    assert variants(family, named_target("cuda:sm_86"))[-2:] == ["dlight", UNSCHEDULED]
    func = rmsnorm(64).with_attr("hymba.kernel", family)
    _, used = schedule(func, named_target("cuda:sm_86"))
    assert used == "dlight"  # both rules declined: dlight's defaults
    with pytest.raises(ValueError, match="does not apply"):
        schedule(func, named_target("cuda:sm_86"), "declines")


def _key_loop(func) -> tirx.For:
    loops = []

    def visit(node):
        if isinstance(node, tirx.For) and node.loop_var.name == "tc":
            loops.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    assert len(loops) == 1
    return loops[0]


def _vars(func, names):
    found = {}

    def visit(node):
        if isinstance(node, tirx.Var) and node.name in names:
            found[node.name] = node

    tvm_ffi.structural_walk(func, visit)
    return found


@pytest.mark.parametrize("window", [1024, None])
def test_sliding_window_prefill_visits_meta_and_window_blocks_only(window):
    """S = 4096, W = 1024, M = 128 with the CUDA tiles (16 queries x 16 keys): the key loop of
    the CUDA-scheduled kernel, its bounds read from the TIR, runs at most
    M / BK + (W + BQ) / BK + 1 = 8 + 65 + 1 = 74 steps per query block (O(meta + window), 73 for
    the last block); the global layer's causal loop grows with the query's position (256 steps
    for the last block)."""
    S, M = 4096, 128
    knobs = kernel_options("attention_prefill", CUDA)
    BQ, BK = knobs["block_q"], knobs["block_k"]
    func = build_for(A.attention_prefill, (1, 25, 5, 64, 128, window, M, "float32"), CUDA)
    mod, variant = schedule(func, CUDA)
    assert variant == "flash_lanes"
    scheduled = mod["main"]
    loop = _key_loop(scheduled)
    v = _vars(scheduled, {"S", "Sq", "vb", "vq"})
    steps = []
    for q_block in range(S // BQ):
        env = {v["S"]: S, v["Sq"]: S, v["vb"]: 0, v["vq"]: q_block,
               ("buffer", "pads"): {(0,): 0}}
        steps.append(max(evaluate(loop.extent, env), 0))
    causal = [(q * BQ + BQ - 1) // BK + 1 for q in range(S // BQ)]
    if window is None:
        assert steps == causal and steps[-1] == S // BK
    else:
        bound = -(-M // BK) + (window + BQ) // BK + 1
        assert max(steps) <= bound == 74
        last = M // BK + (S - 1) // BK - (S - BQ - window) // BK + 1
        assert steps[-1] == last == 73
        # the window's blocks: a quarter of S here, so about half of causal's work in all
        assert sum(steps) < 0.55 * sum(causal)
