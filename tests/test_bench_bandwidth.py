"""The honest decode bound (hymba_compile/bench/bandwidth.py) and the kernel bench's rotation
through copies larger than the last-level cache (hymba_compile/bench/kernels.py)."""

from __future__ import annotations

import torch

from hymba_compile.bench import bandwidth
from hymba_compile.bench.kernels import KernelCase, Prepared, copies_needed, rotating
from hymba_compile.build import build_kernel
from hymba_compile.ir.linear import gemv


def test_last_level_cache_is_read_from_sysfs_or_defaulted():
    size = bandwidth.last_level_cache_bytes()
    assert size >= 2**20  # every x86 server CPU has at least 1 MiB of last-level cache


def test_read_kernel_sums_rows_exactly_as_torch():
    """Our read kernel must really read every element: its row sums equal torch's."""
    a = torch.randn(64, 4096)
    y = torch.empty(1, 64)
    bandwidth._tvm_read_kernel(64, 4096, "float32")(a, y)
    torch.testing.assert_close(y[0], a.sum(dim=1), rtol=1e-5, atol=1e-4)
    b = a.to(torch.bfloat16)
    bandwidth._tvm_read_kernel(64, 4096, "bfloat16")(b, y)
    torch.testing.assert_close(y[0], b.float().sum(dim=1), rtol=1e-5, atol=1e-4)


def test_bound_is_the_best_reader(monkeypatch):
    monkeypatch.setattr(bandwidth, "last_level_cache_bytes", lambda: 2**20)
    peak, readers = bandwidth.peak_read_gbps(gib=1 / 64, repeat=2)
    assert set(readers) == {"torch.mv", "torch.sum", "tvm_read", "tvm_read_bf16"}
    assert all(v > 0 for v in readers.values())
    assert peak == max(readers.values())


def _case(bytes_per_call: int, memory_bound: bool = True) -> KernelCase:
    built = []

    def setup() -> Prepared:
        w = torch.randn(16, 32)
        x = torch.randn(1, 32)
        y = torch.empty(1, 16)
        kern = build_kernel(gemv(1, 16, 32, "float32"))
        built.append(kern)
        return Prepared(ours=lambda: (kern(x, w, y), y.clone())[1], baseline=lambda: x @ w.T)

    case = KernelCase("t", "t", "t", setup, memory_bound=memory_bound,
                      bytes_moved=lambda: bytes_per_call)
    case.built = built
    return case


def test_copies_cover_four_times_the_cache():
    assert copies_needed(_case(10 * 2**20), 32 * 2**20) == 13  # ceil(128 / 10)
    assert copies_needed(_case(1 << 30), 32 * 2**20) == 2  # always at least two
    assert copies_needed(_case(1), 32 * 2**20) == 4096  # capped
    assert copies_needed(_case(1, memory_bound=False), 32 * 2**20) == 1


def test_rotation_calls_each_copy_in_turn_and_compiles_once():
    case = _case(1)
    first, timed, copies = rotating(case, 3)
    assert copies == 3 and len(case.built) == 3 and len({id(k) for k in case.built}) == 1  # one compile
    outs = [timed.ours() for _ in range(3)]
    bases = [timed.baseline() for _ in range(3)]
    for o, b in zip(outs, bases):  # the i-th call of each side runs the same copy's data
        torch.testing.assert_close(o, b, rtol=1e-5, atol=1e-5)
    assert not torch.equal(outs[0], outs[1])  # different copies, different random data


def test_copies_are_capped_by_the_memory_a_set_up_holds(monkeypatch):
    """A set-up holding 64 MiB against a 256 MiB budget: 4 copies, not the 100 asked for."""
    from hymba_compile.bench import kernels

    monkeypatch.setattr(kernels, "MEMORY_BUDGET", 256 * 2**20)
    held = []

    def setup() -> Prepared:
        t = torch.ones(16 * 2**20)  # 64 MiB, touched
        held.append(t)
        return Prepared(ours=lambda: t[:1], baseline=lambda: t[:1])

    case = KernelCase("big", "big", "t", setup, memory_bound=True, bytes_moved=lambda: 4)
    _, _, copies = rotating(case, 100)
    assert 3 <= copies <= 5 and len(held) == copies
