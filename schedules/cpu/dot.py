"""The bf16 dot-product instruction on x86 CPUs (avx512_bf16's vdpbf16ps: 16 fp32 accumulators
+= pairs of bf16 products, 32 multiply-adds per instruction, twice the fp32 FMA rate) for the
linears' reduction blocks, as a TensorIntrin.

How the instruction is reached (TVM 0.27, LLVM 22), each alternative measured:
* `T.call_llvm_pure_intrin` cannot: the intrinsic takes <32 x bfloat>, and TVM legalizes every
  bf16 value of a CPU kernel to fp32 (BF16ComputeLegalize) and bf16 storage to u16; its LLVM
  codegen has no bf16 type (it segfaults when both legalizations are skipped).
* So the intrinsic sits in a 6-line LLVM IR helper taking pointers, linked into the module by
  the `pragma_import_llvm` annotation and inlined (alwaysinline); the kernel calls it with
  `T.call_extern` on buffer addresses (the bf16 ones typed as their u16 storage, `_bf16_ptr`).
  The accumulator tile is a small constant "global" buffer (a stack array that LLVM promotes
  to registers once the helper is inlined).
* The bf16 operands must live in bf16 storage: TVM keeps an intermediate bf16 buffer computed
  by arithmetic (lm_head's normalised rows `xn`) in fp32, so the schedules read a copy stage
  `xb` (ir/linear.py, ir/embed.py's dot layouts).

The GEMV's reduction block y[..] = sum_k f32(xb[.., k]) * f32(w[.., k]) is split
k -> (ko, l 16, p 2) and rfactored over l, which gives exactly the instruction's shape:
part[.., l] += xb[.., 32 ko + 2 l + p] * w[.., 32 ko + 2 l + p] over p, then y = sum_l part;
the GEMM's IR has that `part` stage itself, over padded rows (ir/linear.padded_dot_compute).
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.script import tirx as T

LANES, PAIRS = 16, 2  # fp32 accumulators per instruction, bf16 products summed into each
K_STEP = LANES * PAIRS  # k consumed per instruction
INTRIN = "hymba_x86_dpbf16ps_16x2"
HELPER = "hymba_dpbf16ps_16x2"
HSUM = "hymba_hsum_16"  # sum of 16 fp32 lanes as a shuffle tree (reassociated)
HSUM_INTRIN = "hymba_x86_hsum_16"
FEATURE = "avx512bf16"

LLVM_HELPER = f"""
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)

define linkonce_odr i32 @{HELPER}(ptr %c, ptr %a, ptr %b) alwaysinline {{
  %acc = load <16 x float>, ptr %c, align 4
  %av = load <32 x bfloat>, ptr %a, align 2
  %bv = load <32 x bfloat>, ptr %b, align 2
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %av, <32 x bfloat> %bv)
  store <16 x float> %r, ptr %c, align 4
  ret i32 0
}}

declare float @llvm.vector.reduce.fadd.v16f32(float, <16 x float>)

define linkonce_odr float @{HSUM}(ptr %c) alwaysinline {{
  %v = load <16 x float>, ptr %c, align 4
  %r = call reassoc float @llvm.vector.reduce.fadd.v16f32(float -0.0, <16 x float> %v)
  ret float %r
}}
"""


def _bf16_ptr(data, offset, extent):
    """Address of a bf16 buffer's element `offset`, typed as its u16 storage: `access_ptr`
    would carry the bf16 element type, which BF16ComputeLegalize retypes to fp32 and
    LowerIntrin then rejects against the u16 storage."""
    return tvm.tirx.call_intrin("handle", "tirx.tvm_access_ptr",
                                tvm.tirx.type_annotation("uint16"), data, offset, extent, 1)


def _intrinsic(index: str):
    """(desc, impl) of the instruction for loops and shapes indexed in `index` ("int32", or
    "int64" as the GEMM's symbolic-row kernels are: tensorize matches index types exactly)."""
    n_lanes, n_pairs, k_step = (tvm.tirx.const(v, index) for v in (LANES, PAIRS, K_STEP))

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (k_step,), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (k_step,), "bfloat16", offset_factor=1)
        C = T.match_buffer(c, (n_lanes,), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:n_lanes], A[0:k_step], B[0:k_step])
            T.writes(C[0:n_lanes])
            for i, p in T.grid(n_lanes, n_pairs):
                with T.sblock("update"):
                    vi, vp = T.axis.remap("SR", [i, p])
                    C[vi] = C[vi] + T.Cast("float32", A[vi * n_pairs + vp]) * \
                        T.Cast("float32", B[vi * n_pairs + vp])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (k_step,), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (k_step,), "bfloat16", offset_factor=1)
        C = T.match_buffer(c, (n_lanes,), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:n_lanes], A[0:k_step], B[0:k_step])
            T.writes(C[0:n_lanes])
            T.evaluate(T.call_extern("int32", HELPER, C.access_ptr("rw"),
                                     _bf16_ptr(A.data, A.elem_offset, k_step),
                                     _bf16_ptr(B.data, B.elem_offset, k_step)))

    return desc, impl


def _hsum(index: str):
    """(desc, impl) of out += sum of the 16 lanes of c, for `index`-typed loops. The lanes
    are the instruction's partial sums; summed one after another they are a chain of 16
    dependent adds per output, which cost as much as the dot products in the GEMM."""
    n_lanes = tvm.tirx.const(LANES, index)
    one = tvm.tirx.const(1, index)

    @T.prim_func(s_tir=True)
    def desc(c: T.handle, o: T.handle) -> None:
        C = T.match_buffer(c, (n_lanes,), "float32", offset_factor=1)
        O = T.match_buffer(o, (one,), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(O[0:1], C[0:n_lanes])
            T.writes(O[0:1])
            for lane in T.serial(n_lanes):
                with T.sblock("update"):
                    vl = T.axis.remap("R", [lane])
                    O[0] = O[0] + C[vl]

    @T.prim_func(s_tir=True)
    def impl(c: T.handle, o: T.handle) -> None:
        C = T.match_buffer(c, (n_lanes,), "float32", offset_factor=1)
        O = T.match_buffer(o, (one,), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(O[0:1], C[0:n_lanes])
            T.writes(O[0:1])
            O[0] = O[0] + T.call_extern("float32", HSUM, C.access_ptr("r"))

    return desc, impl


_registered: set[str] = set()


def _register(name: str, make, index: str) -> str:
    full = f"{name}_{index}"
    if full not in _registered:
        s_tir.TensorIntrin.register(full, *make(index), override=True)
        _registered.add(full)
    return full


def intrin_name(index: str = "int32") -> str:
    """The dot-product TensorIntrin for `index`-typed loops (registered on first use)."""
    return _register(INTRIN, _intrinsic, index)


def hsum_intrin_name(index: str = "int32") -> str:
    """The 16-lane horizontal-sum TensorIntrin for `index`-typed loops."""
    return _register(HSUM_INTRIN, _hsum, index)


def tensorize_lane_sum(sch: s_tir.Schedule, block, depth: int, index: str) -> None:
    """The write-back y = sum over 16 lanes as one shuffle-tree sum per output. The block sits
    under `depth` loops of its producer; reverse_compute_at gave it the lane loop first, then
    its output loops: lanes are moved innermost."""
    lane, *outputs = sch.get_loops(block)[depth:]
    if outputs:
        sch.reorder(*outputs, lane)
    sch.decompose_reduction(block, lane)
    sch.tensorize(lane, hsum_intrin_name(index))


def has_bf16_dot(target: tvm.target.Target) -> bool:
    """Whether the LLVM target's CPU (its mcpu and feature flags) has avx512_bf16."""
    if target.kind.name != "llvm":
        return False
    try:
        return bool(tvm.target.codegen.target_has_features(FEATURE, target))
    except Exception:  # noqa: BLE001 - a target LLVM cannot describe has no such feature
        return False


def applies(weight_dtype: str, k: int | None, target: tvm.target.Target) -> bool:
    """The dot-product schedule fits: bf16 weights, k a multiple of 32, and the instruction on
    the target."""
    return (weight_dtype == "bfloat16" and k is not None and k % K_STEP == 0
            and has_bf16_dot(target))


def rfactor_pairs(sch: s_tir.Schedule, block):
    """Split the reduction loop k (last loop of `block`) into (ko, 16, 2) and rfactor the 16:
    returns the rf block, whose last three loops are (ko, l, p)."""
    k = sch.get_loops(block)[-1]
    _, l, _ = sch.split(k, [None, LANES, PAIRS])
    return sch.rfactor(l, factor_axis=len(sch.get_loops(block)) - 3)


_STACK_BYTES = 1024  # as tiles.py: "global" constant buffers under this size go on the stack
_PARTITION = "pragma_loop_partition_hint"


def _activations_loop(sch: s_tir.Schedule, parallel: bool) -> object:
    """Vectorise the rounding stage xb = bf16(x) (rows in parallel when `parallel`), if the
    kernel has one."""
    try:
        xb = sch.get_sblock("xb")
    except Exception:  # noqa: BLE001 - lm_head's activations are bf16 already
        return None
    r, c = sch.get_loops(xb)
    co, ci = sch.split(c, [None, K_STEP])
    sch.vectorize(ci)
    if parallel:
        sch.parallel(r)
    return r


def gemv_dot_block(sch: s_tir.Schedule, block, batch: int, n: int, rows: int) -> None:
    """Row-parallel GEMV with the instruction: per `rows` output rows, all batch rows against
    the same weight vectors, one 16-lane accumulator per (batch row, output row)."""
    rf = rfactor_pairs(sch, block)
    b, j, ko, lane, _ = sch.get_loops(rf)
    jo, ji = sch.split(j, [None, rows])
    sch.reorder(jo, ko, b, ji, lane)
    sch.reverse_compute_at(block, jo)
    sch.parallel(jo)
    sch.unroll(b)
    sch.unroll(ji)
    init = sch.decompose_reduction(rf, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane, intrin_name())
    tensorize_lane_sum(sch, block, 1, "int32")
    _activations_loop(sch, parallel=False)
    sch.annotate(ko, "pragma_import_llvm", LLVM_HELPER)


def gemv_dot_rows(batch: int, n: int, rows: int | None) -> int | None:
    """Output rows per step (default: 1 up to batch 2, else 2): the accumulators, batch *
    rows * 64 bytes, stay under the stack limit, and rows divide n. None: none fits."""
    rows = rows or (1 if batch <= 2 else 2)
    while rows > 1 and (n % rows or batch * rows * LANES * 4 >= _STACK_BYTES):
        rows -= 1
    return rows if batch * rows * LANES * 4 < _STACK_BYTES else None


def gemm_dot_block(sch: s_tir.Schedule, mr: int, nr: int, per_block: int,
                   out: str = "y") -> None:
    """The padded bf16-activation GEMM of ir/linear.py (stages xb, part, y) with the
    instruction: register tiles of mr x-rows by nr w-rows (mr * nr accumulators of 16 lanes),
    blocks of `per_block` tiles of w-rows in parallel (`gemm_dot_tile`), every x-row tile in turn within a block (the
    block stays in L2, the x tile in L1), y written back per tile (only rows < m).

    The rows are padded in the IR because tensorize refuses a block under a predicate (TVM
    0.27: "rhs_buffer_map_.count(desc)"), which a row split with a tail would add."""
    part, y = sch.get_sblock("part"), sch.get_sblock(out)
    i, j, lane, ko, _ = sch.get_loops(part)
    jo, jb, ji = sch.split(j, [None, per_block, nr])
    io, ii = sch.split(i, [None, mr])
    sch.reorder(jo, io, jb, ko, ii, ji, lane)
    sch.parallel(jo)  # before y moves under it: y (rows < m of the padded part) is refused
    sch.reverse_compute_at(y, jb)
    sch.unroll(ii)
    sch.unroll(ji)
    init = sch.decompose_reduction(part, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane, intrin_name("int64"))
    interleave_lane_sums(sch, y, 3)
    _activations_loop(sch, parallel=True)
    sch.annotate(ko, "pragma_import_llvm", LLVM_HELPER)


def interleave_lane_sums(sch: s_tir.Schedule, block, depth: int) -> None:
    """The write-back of a tile (under a row predicate, which tensorize refuses): as
    reverse_compute_at placed it under `depth` loops, lanes outermost, then the tile's
    independent sums, unrolled, so that their add chains overlap."""
    for loop in sch.get_loops(block)[depth + 1:]:
        sch.unroll(loop)


MIN_BLOCK_ROWS = 12  # weight rows per parallel block below which the schedule declines


def gemm_dot_tile(n: int, mr: int, nr: int, pad_rows: int,
                  nb: int = 64) -> tuple[int, int, int] | None:
    """(mr, nr, tiles per block): mr dividing the IR's row padding, nr dividing n (nr, 4, 2,
    3, 1 tried in turn), mr * nr * 64 bytes of accumulators under the stack limit (fewer rows
    first), blocks of about nb weight rows. None when nothing fits, or when n admits no block
    of MIN_BLOCK_ROWS rows or more without a tail (the vocabulary, 32001 = 3 x 10667): with
    3-row blocks every x tile streams from L2 for each block, measured at 123 GFLOP/s
    against 266 with 36-row blocks (32004 rows), slower than the fp32-activation tiles."""
    if pad_rows % mr:
        return None
    nr = next(r for r in (nr, 4, 2, 3, 1) if n % r == 0)
    while mr > 1 and (mr * nr * LANES * 4 >= _STACK_BYTES or pad_rows % mr):
        mr -= 1
    if mr * nr * LANES * 4 >= _STACK_BYTES:
        return None
    tiles = n // nr
    per_block = max(d for d in range(1, min(tiles, max(1, nb // nr)) + 1) if tiles % d == 0)
    if per_block * nr < min(MIN_BLOCK_ROWS, n):
        return None
    return mr, nr, per_block
