"""How many training batches the per-sample BatchNorm re-estimation needs (issue 13, item 3).

One TRADI run of the mnist-notmnist recipe (the paper's MLP with BatchNorm and dropout, Adam
1e-3, weight decay 1e-2, batch 128, kernel posterior rank 10) on the whole training split
(54,000 images, 422 batches), seed 0, shortened: ``--epochs`` (3) epochs with StepLR every
``--step-size`` (1) epoch, the 30-epoch schedule's two decays compressed, so that the tracked
variance is that of a decayed learning rate as at the end of the full recipe. Then, at fixed
scales (1: untuned; 10: the README's OOD-chosen multiplier), 20-sample ensembles whose BatchNorm
statistics come from the first ``bn_batches`` batches of the shuffled training loader, for
bn_batches in {all, 100, 30, 10} and three ensemble seeds (each seed draws its own weight sets
and shuffles its own BatchNorm batches).

Reported per row: build time (CPU and wall), validation NLL / accuracy (the split the default
is chosen on), and only as a report the MNIST-test NLL / accuracy and the notMNIST AUROC.
"Noise" is the spread across ensemble seeds; the paired difference to "all" uses the same seed.

    TRADI_DATA_DIR=/work/shared/data PYTHONPATH=src:. OMP_NUM_THREADS=1 python \
        benchmarks/study_bn_batches.py --out study_bn_batches.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import tradi
from tradi.data import load_benchmark
from tradi.experiments.config import load_config
from tradi.experiments.loaders import TensorBatches
from tradi.methods import TRADI, build_method
from tradi.metrics import accuracy, nll
from tradi.metrics.ood import ood_metrics
from tradi.models import build_model
from tradi.selection.fit import seeded_randomness

BN_BATCHES: tuple[int | None, ...] = (None, 100, 30, 10)
SEEDS = (0, 1, 2)
SCALES = (1.0, 10.0)
N_SAMPLES = 20


def _probs(ensemble: tradi.SampledEnsemble, split: Any) -> torch.Tensor:
    return torch.cat([ensemble(x) for x, _ in TensorBatches(split, 2000)])


def _row(
    method: TRADI, bench: Any, scale: float, bn_batches: int | None, seed: int, batch: int
) -> dict:
    assert method.model is not None
    loader = TensorBatches(bench.train, batch, shuffle=True, seed=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    with seeded_randomness(seed, torch.device("cpu"), [loader]):
        ensemble = tradi.SampledEnsemble(
            method.model,
            method._posterior(scale),
            N_SAMPLES,
            bn_loader=loader,
            bn_batches=bn_batches,
            seed=seed,
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    val, test, ood = (_probs(ensemble, s) for s in (bench.val, bench.test, bench.ood_test))
    return {
        "scale": scale,
        "bn_batches": bn_batches,
        "seed": seed,
        "build_cpu_s": cpu,
        "build_wall_s": wall,
        "val_nll": float(nll(val, bench.val.y)),
        "val_accuracy": float(accuracy(val, bench.val.y)),
        "test_nll": float(nll(test, bench.test.y)),
        "test_accuracy": float(accuracy(test, bench.test.y)),
        "notmnist_auroc": ood_metrics(test.amax(1), ood.amax(1))["auroc"],
    }


def _summary(rows: list[dict]) -> dict[str, Any]:
    """Per bn_batches: means over seeds, the seed-to-seed deviation of the val NLL, and the
    paired (same seed: same weight sets) val NLL difference to all, its mean and deviation."""
    full = {r["seed"]: r for r in rows if r["bn_batches"] is None}
    out = {}
    for k in BN_BATCHES:
        mine = [r for r in rows if r["bn_batches"] == k]
        keys = ("build_cpu_s", "val_nll", "val_accuracy", "test_nll", "notmnist_auroc")
        entry = {key: statistics.mean(r[key] for r in mine) for key in keys}
        entry["val_nll_seed_std"] = statistics.stdev(r["val_nll"] for r in mine)
        paired = [r["val_nll"] - full[r["seed"]]["val_nll"] for r in mine]
        entry["val_nll_minus_all"] = statistics.mean(paired)
        entry["val_nll_minus_all_seed_std"] = statistics.stdev(paired)
        out[str(k)] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--step-size", type=int, default=1, help="StepLR period, epochs")
    parser.add_argument("--out", type=Path, default=Path("study_bn_batches.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config("mnist-notmnist")
    bench = load_benchmark(config.benchmark, val_fraction=config.data.val_fraction, seed=0)
    train = dataclasses.replace(
        config.train_config(seed=0, progress=False), epochs=args.epochs, step_size=args.step_size
    )
    options = dict(config.methods["tradi"]) | {"scale": 1.0}
    method = build_method(
        "tradi",
        lambda: build_model("mlp", bench.num_classes, bench.input_shape, **config.model.options),
        train=train,
        **options,
    )
    assert isinstance(method, TRADI)
    batch = config.data.batch_size
    started = time.perf_counter()
    method.fit(TensorBatches(bench.train, batch, shuffle=True, seed=0))
    result: dict[str, Any] = {
        "epochs": args.epochs,
        "step_size": args.step_size,
        "train_wall_s": time.perf_counter() - started,
        "n_samples": N_SAMPLES,
        "rows": [],
        "summary": {},
    }
    for scale in SCALES:
        rows = [_row(method, bench, scale, k, seed, batch) for seed in SEEDS for k in BN_BATCHES]
        result["rows"] += rows
        result["summary"][str(scale)] = _summary(rows)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
