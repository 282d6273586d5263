"""The CPU row pipeline of an RMSNorm (sum of squares, output, optional elementwise producers),
shared by the norm rules and the lm_head rules (not a rule file)."""

from __future__ import annotations


def divisor(n: int, prefs=(64, 32, 16, 8, 4, 2)) -> int:
    """The first of `prefs` dividing n (1 if none): a split that needs no tail predicate."""
    for p in prefs:
        if n % p == 0:
            return p
    return 1


def name_of(sch, block) -> str:
    return sch.get(block).name_hint


def _dim(sch, block) -> int:
    """Extent of the innermost loop of a block (the row width for the norm blocks)."""
    return int(sch.get(sch.get_loops(block)[-1]).extent)


def _vector_sum_of_squares(sch, ss, acc_lanes: int, fold_lanes: int):
    """Split the reduction of `ss` (a root-level block with loops (row, k)) into
    `acc_lanes` partial sums (rfactor); then fold those into `fold_lanes` with a second rfactor,
    so the final horizontal sum is short. Returns the rfactor blocks, outermost first."""
    k = sch.get_loops(ss)[-1]
    _, ki = sch.split(k, factors=[None, acc_lanes])
    rf = sch.rfactor(ki, factor_axis=0)
    rfs = [rf]
    if 1 < fold_lanes < acc_lanes:
        k = sch.get_loops(ss)[-1]
        _, ki = sch.split(k, factors=[None, fold_lanes])
        rfs.append(sch.rfactor(ki, factor_axis=0))
    return rfs


def schedule_norm_rows(sch, blocks, parallel: bool = True, lanes: int = 16,
                       acc_lanes: int = 64) -> None:
    """Schedule a row pipeline given as root-level blocks in order: any elementwise producers
    (e.g. the residual add), then the RMSNorm pair `<y>_ss`, `<y>` from `ir.norm.normalise`.

    One (parallel) loop over rows; under it, each block's row loop, vectorised by `lanes` (or the
    largest divisor of the width); the sum of squares accumulated in `acc_lanes` lanes (several
    independent vector registers) and folded to 16 lanes before the horizontal sum."""
    ss = next(b for b in blocks if name_of(sch, b).endswith("_ss"))
    dim = _dim(sch, ss) if len(sch.get_loops(ss)) == 2 else 1
    acc = divisor(dim, tuple(p for p in (64, 32, 16, 8, 4, 2) if p <= acc_lanes))
    rfs = []
    if acc > 1:
        rfs = _vector_sum_of_squares(sch, ss, acc, divisor(acc, (16, 8, 4, 2)) if acc > 16 else 1)
    order = []
    for b in blocks:
        if name_of(sch, b).endswith("_ss"):
            order.extend(rfs)
        order.append(b)
    row = sch.get_loops(order[0])[0]
    for b in order[1:]:
        sch.reverse_compute_at(b, row)
    if parallel:
        sch.parallel(row)
    # The partial sums stay in the default ("global") scope on purpose: compacted to the row,
    # they become small stack arrays (registers after LLVM); "local" buffers are allocated with
    # TVMBackendAllocWorkspace at every row instead.
    for b in rfs:
        loops = sch.get_loops(b)
        if len(loops) == 3 and not sch.get(b).same_as(sch.get(order[0])):
            # reverse_compute_at orders the loops by block iters (lane, then reduction):
            # put the reduction outside so the lanes are the vector.
            sch.reorder(loops[2], loops[1])
        loops = sch.get_loops(b)
        if len(loops) == 3:
            sch.vectorize(loops[2])
            sch.decompose_reduction(b, loops[1])
    for b in blocks:
        if name_of(sch, b).endswith("_ss") or len(sch.get_loops(b)) < 2:
            continue
        inner = sch.get_loops(b)[-1]
        width = int(sch.get(inner).extent)
        _, vec = sch.split(inner, factors=[None, divisor(width, (lanes, 8, 4, 2))])
        sch.vectorize(vec)
