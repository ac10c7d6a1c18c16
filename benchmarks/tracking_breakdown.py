"""Where the floor update's time goes, op by op, right after a real Adam step (docs/tracker.md).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/tracking_breakdown.py [mlp|lenet5] [steps]

Steps rotate between: the compiled update (`tracker.update()`), the eager update's ops timed one
by one, and touching the state only (reading and writing sigma2 and w(t-1) once: the memory
floor of any update). Prints medians of this thread's CPU time in microseconds; one thread.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import tradi
from tradi.models import build_model
from tradi.tracking import fused


def eager_ops(tracker: tradi.WeightTracker) -> list[tuple[str, Callable[[], object]]]:
    """The eager floor update's ops (`updates.update_floor`) on `tracker`'s state."""
    weights = [p.detach() for p in tracker._params]
    prev, views, var = tracker._previous, tracker._previous_views, tracker._var
    assert prev is not None
    return [
        ("eager: finiteness sums", lambda: math.isfinite(sum(float(w.sum()) for w in weights))),
        ("eager: -d into w(t-1)", lambda: torch._foreach_sub_(views, weights)),
        ("eager: 64-entry probe", lambda: bool(torch.count_nonzero(prev[:: prev.numel() // 64]))),
        ("eager: variance addcmul", lambda: var.addcmul_(prev, prev, value=1.0)),
        ("eager: copy into w(t-1)", lambda: torch._foreach_copy_(views, weights)),
    ]


def main(model_name: str = "mlp", steps: int = 600) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, input_shape=(1, 28, 28))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)
    compiled, eager, touched = (tradi.WeightTracker(model) for _ in range(3))
    assert touched._previous is not None
    state = [touched._var, touched._previous]
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    variants: list[list[tuple[str, Callable[[], object]]]] = [
        [("compiled update()" if fused.floor_step_available() else "update()", compiled.update)],
        eager_ops(eager),
        [("state touched only", lambda: torch._foreach_mul_(state, 1.0))],
    ]
    times: dict[str, list[float]] = {}
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        with torch.no_grad():
            for name, op in variants[step % len(variants)]:
                start = time.thread_time()
                op()
                times.setdefault(name, []).append(1e6 * (time.thread_time() - start))
    for name, values in times.items():
        print(f"{name:26s} {statistics.median(values[10:]):8.1f} us")
    eager_total = sum(statistics.median(v[10:]) for k, v in times.items() if k.startswith("eager"))
    print(f"{'eager: all ops':26s} {eager_total:8.1f} us")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "mlp", int(sys.argv[2]) if len(sys.argv) > 2 else 600
    )
