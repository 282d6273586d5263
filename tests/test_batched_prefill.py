"""Batched prefill (`prefill_b{B}`, hymba_compile/program_layer.PackedSteps): the prompts of B
rows packed into one sequence of rows, every linear over all rows at once, attention / conv /
scan per row. Row-wise kernels compute each row exactly as the row-by-row program does, so the
logits and the decode that follows must match it bit for bit; against the eager reference,
the fp32 tolerance of test_compiled_parity."""

from __future__ import annotations

import pytest
import torch

from hymba_compile.config import preset
from hymba_compile.model import compiled_backend
from hymba_compile.reference import HymbaReference
from hymba_compile.weights import random_parameters


@pytest.fixture(scope="module")
def tiny():
    config = preset("tiny")
    params = random_parameters(config, seed=0, dtype=torch.float32)
    backend = compiled_backend(config, params, torch.float32, decode_batches=(1, 2, 4),
                               progress=False, prefill_batches=(2, 4))
    return config, params, backend


def _generate(backend, ids, mask, sizes, steps=4, last_only=False):
    backend.prefill_sizes = sizes
    try:
        logits, state = backend.prefill(ids, mask, last_only=last_only)
        outs = [logits]
        tok = logits[:, -1].argmax(-1)
        for _ in range(steps):
            step = backend.decode(state, tok)
            outs.append(step)
            tok = step.argmax(-1)
        return outs
    finally:
        backend.prefill_sizes = [b for b in (4, 2) if f"prefill_b{b}" in backend.fn]


def test_program_has_the_batched_prefill_sizes_asked_for(tiny):
    config, params, backend = tiny
    assert backend.prefill_sizes == [4, 2]
    assert {"prefill_b2", "prefill_b4"} <= set(backend.fn)


def test_batched_prefill_sizes_are_validated():
    from hymba_compile.program_spec import ProgramSpec

    with pytest.raises(ValueError, match="batched prefill sizes"):
        ProgramSpec(preset("tiny"), "float32", (1, 4), prefill_batches=(1,))


def _batch(config, batch: int):
    """Mixed prompt lengths: row r has (5 r) % 17 left pads of 21 tokens."""
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, config.vocab_size, (batch, 21), generator=g)
    mask = torch.ones(batch, 21, dtype=torch.long)
    for r in range(batch):
        mask[r, : (5 * r) % 17] = 0
    return ids, mask


@pytest.mark.parametrize("batch", [2, 3, 4])
@pytest.mark.parametrize("last_only", [False, True])
def test_batched_equals_row_by_row(tiny, batch, last_only):
    """Prefill then 4 greedy decode steps; 3 rows = a group of 2 + one row."""
    config, _, backend = tiny
    ids, mask = _batch(config, batch)
    batched = _generate(backend, ids, mask, [4, 2], last_only=last_only)
    row_by_row = _generate(backend, ids, mask, [], last_only=last_only)
    if last_only:  # one GEMM over the rows' last positions vs a GEMV per row: the same fp32
        # products summed in another order (fp32 tolerance); the tokens and the state agree
        torch.testing.assert_close(batched[0], row_by_row[0], rtol=1e-5, atol=1e-5)
        batched, row_by_row = batched[1:], row_by_row[1:]
    for got, want in zip(batched, row_by_row):
        assert torch.equal(got, want)


def test_more_rows_than_a_group_without_cache(tiny):
    """7 rows (no decode state, so no bucket limit): groups of 4 and 2, then one row."""
    config, _, backend = tiny
    ids, mask = _batch(config, 7)
    got, _ = backend.prefill(ids, mask, want_cache=False)
    backend.prefill_sizes = []
    try:
        want, _ = backend.prefill(ids, mask, want_cache=False)
    finally:
        backend.prefill_sizes = [4, 2]
    assert torch.equal(got, want)


def test_batched_prefill_matches_the_reference(tiny):
    """fp32 program vs the eager reference on the same left-padded batch: logits within 1e-3
    (test_compiled_parity's fp32 bound), identical greedy tokens."""
    config, params, backend = tiny
    reference = HymbaReference(config, params)
    ids = torch.randint(0, config.vocab_size, (4, 30), generator=torch.Generator().manual_seed(9))
    mask = torch.ones(4, 30, dtype=torch.long)
    mask[1, :11] = 0
    mask[3, :26] = 0
    got, _ = backend.prefill(ids, mask)
    want, _ = reference.prefill(ids, mask)
    real = mask.bool()
    assert (got[real] - want[real]).abs().max().item() <= 1e-3
    assert torch.equal(got[:, -1].argmax(-1), want[:, -1].argmax(-1))
