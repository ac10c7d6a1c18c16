"""Timing helpers shared by the benchmark modules."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


def interleaved(
    fns: dict[str, Callable[[], None]],
    steps: int,
    rounds: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating blocks of `steps` calls.

    Alternating blocks in one process is what makes a ratio of two timings meaningful on a noisy
    machine: both sides see the same load. ``clock=time.thread_time`` counts the CPU time of
    this thread only (single-threaded work on a machine whose other processes take turns).
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        for _ in range(steps):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}
