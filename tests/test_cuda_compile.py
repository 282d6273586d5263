"""Every kernel for every NVIDIA architecture, in the default run: every `EXAMPLES` builder of every
`ir/<module>.py` (`schedules.coverage.examples`, so new families are picked up) is built with the
CUDA knobs (`schedules.options.build_for`, as the program and `schedules.coverage` build it) and
scheduled for cuda:sm_90 with its default variant; all of them are lowered into ONE CUDA source
(`hymba_compile.cuda_compile`), and ONE nvcc call builds the fatbin for every supported arch and
reports per-kernel resources.

Checked, with no exclusions: every example schedules and lowers, every kernel is a real
`__global__` kernel (nothing left on the host), the fatbin holds SASS for each arch plus PTX, no
kernel spills, no kernel keeps more than STACK_LIMIT bytes of local memory (a per-thread array in
local memory shows as a stack frame with zero spills), and registers / shared memory stay within
the family's budget (BUDGETS). Without nvcc the compile checks skip.
Time on the 2-core box: ~10 s scheduling + lowering, then one nvcc run for 6 archs, ~32 s (66 s
of CPU: front end ~9 s and ptxas ~3 s per arch, two archs at a time); ~45 s in all, ~60 s when
another job holds a core.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from hymba_compile import cuda_compile as cc
from hymba_compile.schedules import apply_schedule, named_target
from hymba_compile.schedules.coverage import examples
from hymba_compile.schedules.options import build_for
from hymba_compile.schedules.registry import schedule

TARGET = "cuda:sm_90"
NVCC = cc.find_nvcc()
needs_nvcc = pytest.mark.skipif(
    NVCC is None, reason="nvcc not found on PATH nor in the nvidia-cuda-nvcc pip package: CUDA "
    "source generated but not compiled (install the CUDA toolkit or pip install nvidia-cuda-nvcc)")

KIB = 1024
# Local memory per thread (ptxas "bytes stack frame"), every kernel. The only frame today is 32 B
# in the RoPE kernels: CUDA's sinf + cosf of one argument keep the Payne-Hanek reduction's 7-word
# array on the stack (only reached for |x| > 105615 rad; a plain sin/cos test kernel shows the
# same 32 B). 64 B still catches any real per-thread array (17+ floats): the earlier flash prefill
# kept a 16 KB score row there with zero spills.
STACK_LIMIT = 64


@dataclass(frozen=True)
class Budget:
    registers: int  # per thread, see `_costs_occupancy` for when more is tolerated
    shared: int     # bytes per block, static + dynamic


# Facts behind the budgets, per arch: (max resident threads, max resident blocks, shared memory
# per SM in bytes). Every supported SM has 64K 32-bit registers, allocated per warp in units of
# 256 (a thread's count rounded up to 8), and reserves 1 KB of shared memory per resident block.
# Shared memory per SM is 164-228 KB on sm_80/90/100 but 100 KB on sm_86/89/120.
SM_LIMITS = {"sm_80": (2048, 32, 164 * KIB), "sm_86": (1536, 16, 100 * KIB),
             "sm_89": (1536, 24, 100 * KIB), "sm_90": (2048, 32, 228 * KIB),
             "sm_100": (2048, 32, 228 * KIB), "sm_120": (1536, 32, 100 * KIB)}
REGISTERS_PER_SM, RESERVED_SHARED = 64 * KIB, KIB

# Per-family budgets:
# - STREAM (memory-bound: norms, elementwise, GEMV, gathers, cache writes, the conv):
#   <= 64 registers keeps >= 1024 threads resident per SM (50% occupancy on sm_80/90/100, 67% on
#   sm_86/89/120), the usual floor for hiding DRAM latency; <= 32 KiB shared keeps >= 3 blocks on
#   a 100 KB SM.
# - TILE (accumulator tiles in registers: prefill matmuls, lm_head prefill, flash attention,
#   split-K decode attention): <= 128 registers, >= 512 threads (16 warps) per SM, the common
#   floor for tiled kernels that hide latency with ILP; <= 48 KiB shared: 2 blocks per 100 KB SM,
#   and the most a block may have without opting in to large dynamic shared memory.
# - SCAN (recurrences serial in time): the parallel work (batch x 3200 channels x 16 states) is
#   a few waves at most, so occupancy is not the limiter; <= 128 registers only guards against
#   runaway unrolling.
# Registers above the budget are tolerated only where they cost no occupancy: the SM still holds
# as many blocks of that kernel as it would at the budget, because shared memory, the thread or
# the block limit binds first (`_costs_occupancy`). The one case today: attention_decode's split
# kernel, 133 registers on sm_120, where its 26.1 KiB of shared memory caps residency at 3 blocks
# of 128 threads at any register count up to 168. Spills must be zero everywhere, and stack
# frames at most STACK_LIMIT.
STREAM, TILE, SCAN = Budget(64, 32 * KIB), Budget(128, 48 * KIB), Budget(128, 48 * KIB)
BUDGETS = {
    "rmsnorm": STREAM, "add_rmsnorm": STREAM, "norm_average": STREAM,
    "hybrid_combine_decode": STREAM, "gemv": STREAM, "gate_up_gemv": STREAM,
    "lm_head_decode": STREAM, "embedding": STREAM, "rope": STREAM, "kv_cache_write": STREAM,
    "rope_cache_write": STREAM, "silu_mul": STREAM,
    "kv_cache_fill": STREAM, "causal_conv1d": STREAM, "causal_conv1d_step": STREAM,
    "ssm_input_split": STREAM,
    "matmul": TILE, "gate_up_matmul": TILE, "lm_head_prefill": TILE,
    "attention_prefill": TILE, "attention_decode": TILE,
    "selective_scan": SCAN, "selective_scan_chunked": SCAN, "selective_state_update": SCAN,
}


def _ident(builder, args) -> str:
    return f"{builder.__module__.rsplit('.', 1)[-1]}:{builder.__name__}" \
           f"({','.join(str(a) for a in args)})"


EXAMPLES = [(_ident(b, a), b, tuple(a)) for b, a in examples()]


@dataclass
class Lowered:
    code: cc.DeviceCode
    variants: dict[str, str] = field(default_factory=dict)  # symbol -> resolved variant
    failures: dict[str, str] = field(default_factory=dict)  # example id -> error


def lower_examples() -> Lowered:
    """Every example, built with the CUDA knobs, scheduled for TARGET, lowered into one source."""
    tgt = named_target(TARGET)
    funcs, variants, failures, ids = {}, {}, {}, {}
    for ident, builder, args in EXAMPLES:
        try:
            func = build_for(builder, args, tgt)
            symbol = str(func.attrs["global_symbol"])
            if symbol in funcs:
                raise ValueError(f"global symbol {symbol!r} also made by {ids[symbol]}")
            funcs[symbol], variants[symbol] = schedule(func, tgt)
            ids[symbol] = ident
        except Exception as e:  # noqa: BLE001 - reported by test_every_example_lowers
            failures[ident] = f"schedule: {cc.error_line(e)}"
    code = cc.lower_cuda(funcs, tgt, strict=False)
    failures.update({ids[s]: f"lower: {err}" for s, err in code.failed.items()})
    return Lowered(code, variants, failures)


@pytest.fixture(scope="module")
def lowered() -> Lowered:
    return lower_examples()


@dataclass
class Compiled:
    code: cc.DeviceCode
    archs: list[str]
    fatbin: bytes
    usage: cc.Usage
    rows: list[dict]


@pytest.fixture(scope="module")
def compiled(lowered) -> Compiled:
    """The one fatbin for every supported arch, with per-kernel resources (one nvcc call)."""
    if NVCC is None:
        pytest.skip(needs_nvcc.kwargs["reason"])
    archs = cc.supported_archs()
    fatbin, usage = cc.compile_with_resources(lowered.code, archs)
    return Compiled(lowered.code, archs, fatbin, usage, cc.resource_table(lowered.code, usage))


def _shared(r: dict) -> int:
    return r["shared_bytes"] + max(r["dynamic_shared_bytes"], 0)


def resident_blocks(arch: str, threads: int, registers: int, shared: int) -> int:
    """Blocks of `threads` threads resident on one SM of `arch` at `registers` per thread and
    `shared` bytes per block (the CUDA occupancy calculator's limits, largest carve-out)."""
    max_threads, max_blocks, smem = SM_LIMITS[arch]
    warps = -(-threads // 32)
    limits = [max_blocks, max_threads // threads]
    if registers:
        limits.append(REGISTERS_PER_SM // (warps * 32 * (-(-registers // 8) * 8)))
    if shared:
        limits.append(smem // (shared + RESERVED_SHARED))
    return min(limits)


def _costs_occupancy(r: dict, budget: Budget) -> bool:
    """Whether the kernel's registers (over budget) leave fewer blocks resident per SM than the
    budget's registers would. Without a known block size every register over budget counts."""
    if r["registers"] <= budget.registers:
        return False
    threads = r["max_threads"]
    if not threads or r["arch"] not in SM_LIMITS:
        return True
    at = lambda regs: resident_blocks(r["arch"], threads, regs, _shared(r))  # noqa: E731
    return at(r["registers"]) < at(budget.registers)


def _spills(r: dict) -> str | None:
    if r["spill_store_bytes"] or r["spill_load_bytes"]:
        return (f"{r['kernel']} {r['arch']}: {r['spill_store_bytes']} B stored, "
                f"{r['spill_load_bytes']} B loaded ({r['registers']} registers)")
    return None


def _over_budget(r: dict) -> str | None:
    budget = BUDGETS[r["family"]]
    dynamic = r["dynamic_shared_bytes"]
    if _costs_occupancy(r, budget) or _shared(r) > budget.shared or dynamic < 0:
        threads = r["max_threads"]
        blocks = "" if not threads or r["arch"] not in SM_LIMITS else (
            f", {resident_blocks(r['arch'], threads, r['registers'], _shared(r))} blocks of "
            f"{threads} resident vs "
            f"{resident_blocks(r['arch'], threads, budget.registers, _shared(r))} at the budget")
        return (f"{r['kernel']} ({r['family']}) {r['arch']}: {r['registers']} registers "
                f"(<= {budget.registers}{blocks}), {_shared(r)} B shared (<= {budget.shared}"
                f"{', plus a symbolic dynamic size' if dynamic < 0 else ''})")
    return None


def family_maxima(rows: list[dict]) -> dict[str, dict[str, tuple[int, int, int]]]:
    """{family: {arch: (max registers, max shared bytes, max stack bytes)}} over its kernels."""
    out: dict = {}
    for r in rows:
        regs, shared, stack = out.setdefault(r["family"], {}).get(r["arch"], (0, 0, 0))
        out[r["family"]][r["arch"]] = (max(regs, r["registers"]), max(shared, _shared(r)),
                                       max(stack, r["stack_bytes"]))
    return out


def test_every_example_lowers(lowered):
    """Every example schedules for CUDA (built with the CUDA knobs) and lowers with TVM."""
    assert not lowered.failures, "\n".join(f"{k}: {v}" for k, v in lowered.failures.items())
    assert len(lowered.variants) == len(EXAMPLES)


def test_every_kernel_is_a_global_kernel(lowered):
    code = lowered.code
    assert not code.host_only, f"kernels with code on the host (need a GPU schedule): " \
                               f"{code.host_only}"
    without = set(code.families) - set(code.kernels.values())
    assert not without, f"no __global__ kernel for {sorted(without)}"
    assert code.source.count("__global__") >= len(code.kernels)


@needs_nvcc
def test_fatbin_holds_every_arch(compiled):
    newest = max(int(a[3:]) for a in compiled.archs)
    expected = sorted([("sass", int(a[3:])) for a in compiled.archs] + [("ptx", newest)])
    assert sorted(cc.fatbin_entries(compiled.fatbin)) == expected
    for arch in compiled.archs:
        missing = set(compiled.code.kernels) - set(compiled.usage[arch])
        assert not missing, f"{arch}: no ptxas report for {sorted(missing)}"
    json.dumps(compiled.rows)  # the table is JSON-ready


@needs_nvcc
def test_no_spills(compiled):
    spills = [_spills(r) for r in compiled.rows]
    assert not any(spills), "register spills:\n" + "\n".join(filter(None, spills))


@needs_nvcc
def test_stack_frames_are_small(compiled):
    """No kernel keeps a per-thread array in local memory (zero spills do not show that)."""
    big = [f"{r['kernel']} ({r['family']}) {r['arch']}: {r['stack_bytes']} B stack frame"
           for r in compiled.rows if r["stack_bytes"] > STACK_LIMIT]
    assert not big, f"stack frames over {STACK_LIMIT} B:\n" + "\n".join(big)


@needs_nvcc
def test_every_family_has_a_budget(compiled):
    unknown = {r["family"] for r in compiled.rows} - set(BUDGETS)
    assert not unknown, f"add these families to BUDGETS (STREAM, TILE or SCAN): {unknown}"


@needs_nvcc
def test_registers_and_shared_memory_within_budget(compiled):
    over = [_over_budget(r) for r in compiled.rows if r["family"] in BUDGETS]
    assert not any(over), "over budget:\n" + "\n".join(filter(None, over))


def test_occupancy_model():
    """resident_blocks against hand-computed cases of the CUDA occupancy calculator."""
    assert resident_blocks("sm_90", 128, 168, 37248) == 3    # 12 warps x 168 regs = 64,512
    assert resident_blocks("sm_90", 128, 176, 37248) == 2
    assert resident_blocks("sm_120", 128, 201, 37248) == 2   # shared: 2 x 38,272 <= 102,400
    assert resident_blocks("sm_120", 128, 64, 37248) == 2
    assert resident_blocks("sm_86", 1024, 32, 0) == 1        # 1536 threads per SM
    assert resident_blocks("sm_90", 256, 116, 0) == 2        # 120 x 256 = 30,720 per block
    assert resident_blocks("sm_86", 32, 16, 0) == 16         # the block limit
    over = {"registers": 133, "max_threads": 128, "arch": "sm_120", "shared_bytes": 26772,
            "dynamic_shared_bytes": 0}
    assert not _costs_occupancy(over, TILE)  # shared memory caps sm_120 at 3 blocks anyway
    assert _costs_occupancy({**over, "arch": "sm_90"}, TILE)


def test_host_kernel_is_reported():
    """An unscheduled kernel (no thread bindings) lands on the host: lower_cuda names it."""
    from hymba_compile.ir.norm import rmsnorm

    func = rmsnorm(1600, "float32")
    with pytest.raises(cc.CudaCompileError, match=str(func.attrs["global_symbol"])):
        cc.lower_cuda({"k": apply_schedule(func, named_target(TARGET), "unscheduled")}, TARGET)


@needs_nvcc
def test_single_arch_resources_match(compiled):
    """resource_usage (one cubin) agrees with the fatbin's report for the same kernel."""
    from hymba_compile.ir.norm import rmsnorm

    code = cc.lower_cuda({"k": apply_schedule(rmsnorm(1600, "bfloat16"), named_target(TARGET))},
                         TARGET)
    (name,) = code.kernels
    arch = "sm_90" if "sm_90" in compiled.archs else compiled.archs[-1]
    alone, combined = cc.resource_usage(code, arch)[name], compiled.usage[arch][name]
    assert (alone.registers, alone.shared_bytes, alone.spill_store_bytes, alone.stack_bytes) == \
        (combined.registers, combined.shared_bytes, combined.spill_store_bytes,
         combined.stack_bytes)
    assert alone.symbol == code.kernels[name] and alone.max_threads


@needs_nvcc
def test_nvcc_error_names_the_archs():
    with pytest.raises(cc.CudaCompileError, match=r"(?s)sm_90.*error"):
        cc.compile_fatbin('extern "C" __global__ void k() { undefined_thing(); }', ["sm_90"])
