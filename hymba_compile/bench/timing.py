"""Timing helper: medians of repeated runs (the read bandwidth is bench/bandwidth.py)."""

from __future__ import annotations

import statistics
import time
from typing import Callable



def median_ms(fn: Callable[[], object], repeat: int = 7, min_batch_s: float = 0.02,
              warmup: int = 2, sync: Callable[[], object] = lambda: None) -> float:
    """Median over `repeat` batches of the time per call of `fn`, in ms; each batch runs enough
    calls to last at least `min_batch_s` (so short kernels are not dominated by timer noise).
    `sync` waits for queued work (e.g. torch.cuda.synchronize) before each clock read."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(min_batch_s / one))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples) * 1e3
