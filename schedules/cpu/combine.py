"""CPU schedules for the fused combine kernels (ir/combine.py), built from the linear layouts of
`schedules/cpu/linear.py`, plus

* row statistics (sum of squares over 3200) as 16-lane vector partial sums (an rfactor), so
  the RMSNorm reductions vectorise instead of running one scalar add chain;
* gate+up: the gate and up reductions laid out identically and their outer loops merged, with
  the silu * mul epilogue in the same iteration, so one output tile of gate and up is
  produced and consumed while it is still in registers / L1 (h is the only output written).
"""

from __future__ import annotations

from tvm import s_tir

from ..registry import cpu_rule
from .tiles import static_extent, finish, gemm_block_loops, gemv_block, gemv_block_loops, pick_lanes


def row_sum_block(sch: s_tir.Schedule, block, lanes: int = 16, at=None):
    """Vectorise a row reduction block ss[i] = sum_k f(x[i, k]) (loops i, k): `lanes` partial
    sums, then one horizontal add per row; both moved under loop `at` if given (a row loop of
    a consumer).

    With `at`, k must split without a tail: compute_at regenerates the rf block's loops and
    drops the tail predicate of the split (TVM 0.27; the rf block then reads past the row). So
    lanes is the widest of 16, 8, 4 dividing k, and an odd k stays a scalar reduction."""
    k = sch.get_loops(block)[-1]
    k_ext = static_extent(sch, k)
    if at is not None:
        lanes = pick_lanes(k_ext, lanes) if k_ext is not None else lanes
        # a row of one vector or less: the split's outer loop has extent 1 and compute_at drops
        # it, so there is nothing to reorder; such a row stays a scalar reduction
        if k_ext is None or k_ext % lanes or k_ext <= lanes:
            sch.compute_at(block, at)
            return None
    elif k_ext is not None and k_ext <= lanes:
        return None
    sch.split(k, [None, lanes])
    rf = sch.rfactor(sch.get_loops(block)[-1], factor_axis=1)
    if at is not None:
        sch.compute_at(block, at)
        sch.compute_at(rf, at)  # regenerates the rf loops as (lanes, k outer): swap them back
        kv, ko = sch.get_loops(rf)[-2:]
        sch.reorder(ko, kv)
    ko, kv = sch.get_loops(rf)[-2:]
    sch.vectorize(kv)
    init = sch.decompose_reduction(rf, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    return rf


def _vectorize_inner(sch: s_tir.Schedule, block, lanes: int = 16) -> None:
    inner = sch.get_loops(block)[-1]
    ext = static_extent(sch, inner)
    if ext is not None and ext <= lanes:
        sch.vectorize(inner)
        return
    _, vec = sch.split(inner, [None, lanes])
    sch.vectorize(vec)


@cpu_rule("norm_average", "rows")
def norm_average_rows(func, target):
    """Ours: rows in parallel; per row the two vectorised sums of squares, then the vectorised
    normalise-weight-average loop (the row is read twice, from L1/L2 the second time)."""
    sch = s_tir.Schedule(func)
    fused = sch.get_sblock("fused")
    row = sch.get_loops(fused)[0]
    sch.parallel(row)
    for name in ("ss_attn", "ss_ssm"):
        row_sum_block(sch, sch.get_sblock(name), at=row)
    _vectorize_inner(sch, fused)
    return sch


@cpu_rule("silu_mul", "rows")
def silu_mul_rows(func, target):
    """Rows in parallel, each row's loop vectorised."""
    sch = s_tir.Schedule(func)
    h = sch.get_sblock("h")
    sch.parallel(sch.get_loops(h)[0])
    _vectorize_inner(sch, h)
    return sch


@cpu_rule("hybrid_combine_decode", "rows")
def hybrid_combine_rows(func, target):
    """Ours: the norm statistics and fused vector first (serial, vectorised: a few thousand
    elements), then the out_proj GEMV with output rows in parallel (`linear.gemv_block`)."""
    sch = s_tir.Schedule(func)
    for name in ("ss_attn", "ss_ssm"):
        row_sum_block(sch, sch.get_sblock(name))
    _vectorize_inner(sch, sch.get_sblock("fused"))
    y = sch.get_sblock("y")
    batch, n, k = (static_extent(sch, loop) for loop in sch.get_loops(y))
    gemv_block(sch, y, batch, k, n)
    return sch


def _split_like(sch: s_tir.Schedule, block, factors_i, factors_j, order):
    """Split the (i, j) loops of an elementwise epilogue like a tiled reduction and reorder
    them; returns the loops by name (io, ii or i; jo, jb, ji or jb, ji)."""
    i, j = sch.get_loops(block)
    loops = dict(zip(("io", "ii"), sch.split(i, factors_i)) if factors_i else [("i", i)])
    loops.update(zip(("jo", "jb", "ji")[-len(factors_j):], sch.split(j, factors_j)))
    sch.reorder(*(loops[name] for name in order))
    return loops


@cpu_rule("gate_up_gemv", "rows")
def gate_up_rows(func, target):
    """Ours: gate and up as two `linear.gemv_block` layouts over the same output rows, merged
    into one parallel row loop together with the silu * mul epilogue."""
    sch = s_tir.Schedule(func)
    gate, up, h = (sch.get_sblock(name) for name in ("gate", "up", "h"))
    batch, n, k = (static_extent(sch, loop) for loop in sch.get_loops(gate))
    tg = gemv_block_loops(sch, gate, batch, k, n, k_tail=False)
    tu = gemv_block_loops(sch, up, batch, k, n, k_tail=False)
    rows = static_extent(sch, tg.unroll[1])
    hl = _split_like(sch, h, None, [None, rows], ("jb", "i", "ji"))
    outer = sch.merge(tg.outer, tu.outer, hl["jb"])
    tg.outer = tu.outer = outer
    finish(sch, tg, tu)
    return sch


@cpu_rule("gate_up_matmul", "tiles", grid={"mr": (4, 6), "nr": (2, 4)})
def gate_up_tiles(func, target, mr: int = 6, nr: int = 4, nb: int = 64):
    """Ours: gate and up as two `linear.gemm_block` layouts (6x4x8 register tiles), their
    block / row-tile / column-tile loops merged, the epilogue on the finished 6x4 tile."""
    sch = s_tir.Schedule(func)
    gate, up, h = (sch.get_sblock(name) for name in ("gate", "up", "h"))
    _, n, k = (static_extent(sch, loop) for loop in sch.get_loops(gate))
    tg, (gio, gjb) = gemm_block_loops(sch, gate, n, k, mr=mr, nr=nr, nb=nb, k_tail=False)
    tu, (uio, ujb) = gemm_block_loops(sch, up, n, k, mr=mr, nr=nr, nb=nb, k_tail=False)
    # the epilogue tiled like the reductions (read back from the rf layout's tile sizes)
    mr = static_extent(sch, tg.unroll[0])
    nr = static_extent(sch, tg.unroll[1])
    per_block = static_extent(sch, gjb)
    hl = _split_like(sch, h, [None, mr], [None, per_block, nr], ("jo", "io", "jb", "ii", "ji"))
    # gate and up live one tile at a time: index them by tile offsets so that they compact
    # to mr x nr (a stack array) instead of an m-sized heap buffer allocated per tile
    for block in (gate, up):
        sch.transform_layout(block, ("write", 0),
                             lambda a, b: (a // mr, b // nr, a % mr, b % nr),
                             assume_injective_transform=True)
    outer = sch.merge(tg.outer, tu.outer, hl["jo"])
    rows = sch.merge(gio, uio, hl["io"])
    sch.merge(gjb, ujb, hl["jb"])
    tg.outer = tu.outer = outer
    tg.tails = tu.tails = ()
    sch.annotate(rows, "pragma_loop_partition_hint", 1)
    finish(sch, tg, tu)
    if nr > 1:
        sch.vectorize(hl["ji"])
    return sch
