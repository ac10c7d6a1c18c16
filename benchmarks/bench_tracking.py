"""Tracking overhead: a training step with `tracker.update()` over one without (issue: foundation).

The default floor update runs as one compiled pass on the CPU where it can
(`tradi.tracking.fused`); the eager update (`TRADI_FUSED=0`, or no C compiler) is timed in the
same interleaved loop for comparison."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import tradi
from benchmarks.common import Result, interleaved
from tradi.models import build_model
from tradi.tracking import fused


def tracking_overhead(model_name: str, steps: int = 20, rounds: int = 15) -> Result:
    """Training-step time with `tracker.update()` over without, same model, same process.

    The ratio is the median over `rounds` of the ratio of two adjacent blocks of `steps` steps,
    which cancels load that drifts slower than a block (the machine is shared), timed in this
    thread's CPU time (one thread does all the work), which leaves out the time other processes
    take from it, though not their pressure on the caches. Two trackers follow the same run:
    the default one and one forced to the eager update."""
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, input_shape=(1, 28, 28))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)
    tracker, eager = tradi.WeightTracker(model), tradi.WeightTracker(model)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def tracked_step() -> None:
        train_step()
        tracker.update()

    def eager_step() -> None:
        train_step()
        enabled, fused.ENABLED = fused.ENABLED, False
        eager.update()
        fused.ENABLED = enabled

    variants = {"plain": train_step, "tracked": tracked_step, "eager": eager_step}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread CPU clock sees this thread's work only
    try:
        blocks = [interleaved(variants, steps, 1, clock=time.thread_time) for _ in range(rounds)]
    finally:
        torch.set_num_threads(threads)
    t = {k: statistics.median(b[k] for b in blocks) for k in variants}
    return {
        "model": model_name,
        "batch": 128,
        "optimizer": "Adam(lr=1e-3, weight_decay=1e-2)",
        "tracked_weights": tracker.num_tracked,
        "state_bytes_per_weight": tracker.state_bytes / tracker.num_tracked,
        "clock": "thread CPU time, one thread",
        "floor_update": "fused C pass" if fused.floor_step_available() else "eager",
        "step_ms_plain": 1e3 * t["plain"],
        "step_ms_tracked": 1e3 * t["tracked"],
        "overhead_ratio": statistics.median(b["tracked"] / b["plain"] for b in blocks),
        "step_ms_tracked_eager": 1e3 * t["eager"],
        "overhead_ratio_eager": statistics.median(b["eager"] / b["plain"] for b in blocks),
        "tracker_start": "default: mu(0)=w(0), sigma2(0)=0, step='delta'",
    }


BENCHMARKS: dict[str, Callable[[], Result]] = {
    "tracking_overhead_mlp": lambda: tracking_overhead("mlp"),
    "tracking_overhead_lenet5": lambda: tracking_overhead("lenet5"),
}
