"""The dense path (issue 7): ENet at CamVid's 90 x 120 on one CPU thread, as camvid-ood runs.

- tradi_epoch_over_mcp_epoch_enet: `TRADI.fit` over `MCP.fit`, one epoch each over the same
  fixed 8 batches of 10 images (not a full 37-batch CamVid epoch: the methods differ per
  optimizer step, by TRADI's tracker update, so a fixed number of batches measures the ratio
  of whole epochs), interleaved in one process. Each call builds a fresh ENet, on both sides.
  Beside it, the same ratio one optimizer step at a time (a step with `tracker.update()` over
  one without, on one network), which is less exposed to the machine's load: the two epoch
  timings are seconds apart, the step pairs milliseconds.
- tradi_inference_enet: per-image time of a 20-sample TRADI ensemble (the kernel posterior of
  a tracked run, BatchNorm statistics re-estimated per sample beforehand, which is a one-off
  cost per ensemble and not timed) over 20 plain forward passes of the trained ENet, on the
  same batch of 10 images, interleaved; for the loop over weight sets, for vmap, and for what
  ``batching="auto"`` chooses.

The data are CamVid batches when TRADI_DATA_DIR holds camvid/, random images otherwise (the
result says which); timings do not depend on the pixel values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

import tradi
from benchmarks.common import Result, interleaved
from tradi.data import DatasetNotFoundError, load_benchmark
from tradi.methods import Method, build_method
from tradi.models import build_model
from tradi.training import TrainConfig

CAMVID_SHAPE = (3, 90, 120)
NUM_CLASSES = 10
IGNORE_INDEX = 255
BATCH = 10
BATCHES = 8
N_SAMPLES = 20
#: camvid-ood's recipe (src/tradi/experiments/configs/camvid-ood.yaml).
TRAIN = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 2e-4}


@contextmanager
def one_thread() -> Iterator[None]:
    """camvid-ood runs on one thread (threads: 1); so do these timings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _batches() -> tuple[list[tuple[Tensor, Tensor]], nn.Module, str]:
    """BATCHES batches of BATCH images, the training loss and where the data came from."""
    if os.environ.get("TRADI_DATA_DIR"):
        try:
            benchmark = load_benchmark("camvid-ood")
        except DatasetNotFoundError:
            pass
        else:
            x, y = benchmark.train[: BATCH * BATCHES]
            loss = nn.CrossEntropyLoss(weight=benchmark.class_weights, ignore_index=IGNORE_INDEX)
            return list(zip(x.split(BATCH), y.split(BATCH), strict=True)), loss, "camvid train"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * BATCHES, *CAMVID_SHAPE, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (BATCH * BATCHES, *CAMVID_SHAPE[1:]), generator=generator)
    loss = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    return list(zip(x.split(BATCH), y.split(BATCH), strict=True)), loss, "random"


def _method(name: str, loss: nn.Module, options: dict[str, Any]) -> Method:
    factory = partial(build_model, "enet", NUM_CLASSES, CAMVID_SHAPE, dropout=0.1)
    config = TrainConfig(epochs=1, seed=0, progress=False, **TRAIN)  # type: ignore[arg-type]
    return build_method(name, factory, train=config, loss_fn=loss, **options)


def epoch_ratio() -> Result:
    with one_thread():
        batches, loss, data = _batches()
        mcp = _method("mcp", loss, {})
        tradi_method = _method("tradi", loss, {"scale": 1.0})
        seconds = interleaved(
            {"mcp": lambda: mcp.fit(batches), "tradi": lambda: tradi_method.fit(batches)},
            steps=1,
            rounds=9,
        )
        steps = _step_times(batches, loss)
    return {
        "model": "enet (dropout 0.1), 90 x 120, batch 10, one thread",
        "data": data,
        "optimizer": "Adam(lr=1e-3, weight_decay=2e-4)",
        "measured_on": f"one epoch of {BATCHES} batches (not a full 37-batch epoch)",
        "epoch_seconds_mcp": seconds["mcp"],
        "epoch_seconds_tradi": seconds["tradi"],
        "tradi_over_mcp": seconds["tradi"] / seconds["mcp"],
        "step_ms_plain": 1e3 * steps["plain"],
        "step_ms_tracked": 1e3 * steps["tracked"],
        "tracked_step_over_plain_step": steps["tracked"] / steps["plain"],
        "goal": "<= 1.03",
    }


def _step_times(batches: list[tuple[Tensor, Tensor]], loss: nn.Module) -> dict[str, float]:
    """Seconds per optimizer step with and without TRADI's tracker update, interleaved."""
    torch.manual_seed(0)
    model = build_model("enet", NUM_CLASSES, CAMVID_SHAPE, dropout=0.1)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"]
    )
    tracker = tradi.WeightTracker(model, init_mean="weights", init_variance=0.0)
    x, y = batches[0]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        optimizer.step()

    def tracked_step() -> None:
        step()
        tracker.update()

    return interleaved({"plain": step, "tracked": tracked_step}, steps=4, rounds=9)


def inference_ratio() -> Result:
    with one_thread():
        batches, loss, data = _batches()
        trained = _method("tradi", loss, {"scale": 1.0})
        trained.fit(batches)
        model = trained.model
        assert model is not None and trained.tracker is not None
        model.eval()
        posterior = trained.tracker.posterior("kernel", rank=10, scale=1.0)
        bn_batches = batches[:2]
        ensembles = {
            mode: tradi.SampledEnsemble(
                model, posterior, N_SAMPLES, bn_loader=bn_batches, batching=mode
            )
            for mode in ("loop", "vmap", "auto")
        }
        x = batches[0][0]
        ensembles["auto"].sample_probs(x)  # "auto" decides at its first prediction

        @torch.no_grad()
        def plain() -> None:
            for _ in range(N_SAMPLES):
                model(x).softmax(dim=1)

        fns: dict[str, Callable[[], None]] = {"plain": plain}
        fns.update(
            {f"ensemble_{mode}": (lambda e=e: e.sample_probs(x)) for mode, e in ensembles.items()}
        )
        seconds = interleaved(fns, steps=1, rounds=5)
    plain_seconds = seconds["plain"]
    return {
        "model": "enet (dropout 0.1), 90 x 120, one thread",
        "data": data,
        "n_samples": N_SAMPLES,
        "images_per_call": BATCH,
        "posterior": "TRADI kernel, rank 10, scale 1, BN statistics per sample",
        "ms_per_image_for_20_passes": {name: 1e3 * s / BATCH for name, s in seconds.items()},
        "ensemble_over_20_plain_forwards": {
            name.removeprefix("ensemble_"): s / plain_seconds
            for name, s in seconds.items()
            if name != "plain"
        },
        "auto_chose": ensembles["auto"].batching_used,
        "goal": "<= 1.2",
    }


BENCHMARKS: dict[str, Callable[[], Result]] = {
    "tradi_epoch_over_mcp_epoch_enet": epoch_ratio,
    "tradi_inference_enet": inference_ratio,
}
