"""The timings of `benchmarks/gpu_check.py` (docs/gpu.md): ratios measured side by side in one
process, in alternating blocks, with `torch.cuda.synchronize()` around every timed block on
CUDA, so both sides see the same clocks and load. Medians of the blocks."""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tradi import SampledEnsemble, WeightTracker
from tradi.models import ENet, ResNet20

Result = dict[str, Any]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, rounds: int, inner: int
) -> dict[str, float]:
    """Median seconds per call of each function, in alternating blocks of `inner` calls (one
    warm-up block each first)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            if r:  # round 0 warms up (cuDNN autotuning, allocator, kernel build)
                times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def workloads(smoke: bool) -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]]:
    """name -> (model factory, input shape [N, C, H, W], classes): ResNet-20 at batch 128 on
    32 x 32, ENet at batch 8 on 360 x 480 (the paper's CamVid size); tiny in smoke mode."""
    if smoke:
        return {
            "resnet20": (lambda: ResNet20(num_classes=10), (4, 3, 16, 16), 10),
            "enet": (lambda: ENet(num_classes=11), (1, 3, 32, 32), 11),
        }
    return {
        "resnet20": (lambda: ResNet20(num_classes=10), (128, 3, 32, 32), 10),
        "enet": (lambda: ENet(num_classes=11), (8, 3, 360, 480), 11),
    }


def _last_module(model: nn.Module) -> str:
    """The name of the last module holding parameters (the classifier)."""
    names = [n for n, m in model.named_modules() if any(True for _ in m.parameters(False))]
    return names[-1]


def time_workload(name: str, spec: tuple, device: torch.device, rounds: int, inner: int) -> Result:
    """Tracked against plain training steps, then 20-sample ensembles (loop, vmap, last layer)
    against 20 forward passes and against one, on the same trained model and batch."""
    factory, shape, classes = spec
    torch.manual_seed(0)
    model = factory().to(device)
    x = torch.randn(shape, device=device)
    y = torch.randint(0, classes, (shape[0], *shape[2:]) if name == "enet" else (shape[0],))
    y = y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    tracker = WeightTracker(model)

    def plain() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def tracked() -> None:
        plain()
        tracker.update()

    train = interleaved({"plain": plain, "tracked": tracked}, device, rounds, inner)
    out: Result = {
        "input": list(shape),
        "train_step_ms": {k: 1e3 * v for k, v in train.items()},
        "tracked_over_plain": train["tracked"] / train["plain"],
    }
    out.update(_time_inference(model, tracker, x, device, rounds))
    return out


def _time_inference(
    model: nn.Module, tracker: WeightTracker, x: torch.Tensor, device: torch.device, rounds: int
) -> Result:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few updates: the memory warning is expected here
        posterior = tracker.posterior("diag", scale=1.0)
    ensembles = {
        "loop": SampledEnsemble(model, posterior, 20, batching="loop"),
        "vmap": SampledEnsemble(model, posterior, 20, batching="vmap", chunk_size=4),
        "last_layer": SampledEnsemble(
            model, posterior, 20, batching="loop", sample_modules=[_last_module(model)]
        ),
    }

    @torch.no_grad()
    def forwards(n: int) -> None:
        for _ in range(n):
            model(x)

    fns: dict[str, Callable[[], object]] = {
        "one_forward": lambda: forwards(1),
        "20_forwards": lambda: forwards(20),
    }
    fns.update({f"ensemble_{k}": (lambda e=e: e(x)) for k, e in ensembles.items()})
    times = interleaved(fns, device, rounds, 1)
    return {
        "inference_ms": {k: 1e3 * v for k, v in times.items()},
        "loop_over_20_forwards": times["ensemble_loop"] / times["20_forwards"],
        "vmap_over_20_forwards": times["ensemble_vmap"] / times["20_forwards"],
        "last_layer_over_one_forward": times["ensemble_last_layer"] / times["one_forward"],
    }


def check_timings(device: torch.device, smoke: bool) -> Result:
    """Every workload's timings; passes when each ran and gave finite, positive ratios."""
    rounds, inner = (1, 1) if smoke else (7, 5)
    out: Result = {}
    for name, spec in workloads(smoke).items():
        out[name] = time_workload(name, spec, device, rounds, inner)
    ratios = [
        v
        for w in out.values()
        for k, v in w.items()
        if k.endswith(("_plain", "_forward", "_forwards"))
    ]
    out["passed"] = all(0 < r < float("inf") for r in ratios)
    return out
