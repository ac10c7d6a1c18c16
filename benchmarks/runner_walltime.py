"""Wall time of a whole `run_experiment` on a reduced budget, to compare runners side by side.

    PYTHONPATH=src python benchmarks/runner_walltime.py --epochs 3 --train 10000 --out /tmp/new

runs the shipped config (default mnist-notmnist) with the given methods and seeds, ``epochs``
epochs (the StepLR step scaled by the same factor, so the schedule keeps its shape) and the
first ``train`` training images, then prints the wall time and the per-method training cost.
Run it with another checkout's ``src`` on PYTHONPATH, same arguments, to time that runner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from tradi.data import load_benchmark
from tradi.experiments import load_config, run_experiment, select_methods

SIX_METHODS = ("mcp", "gaussian_perturbation", "mc_dropout", "deep_ensembles", "swag", "tradi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="mnist-notmnist")
    parser.add_argument("--methods", nargs="+", default=list(SIX_METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=10_000, help="training images kept")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    config = select_methods(load_config(args.config), args.methods)
    factor = args.epochs / config.train["epochs"]
    step_size = max(1, round(config.train.get("step_size", 10) * factor))
    train = {**config.train, "epochs": args.epochs, "step_size": step_size}
    config = dataclasses.replace(config, train=train, seeds=tuple(args.seeds))
    benchmark = load_benchmark(
        config.benchmark, val_fraction=config.data.val_fraction, seed=config.data.split_seed
    )
    kept = benchmark.train.subset(torch.arange(min(args.train, len(benchmark.train))))
    benchmark = dataclasses.replace(benchmark, train=kept)
    started = time.perf_counter()
    results = run_experiment(config, args.out, benchmark=benchmark, progress=False)
    wall = time.perf_counter() - started
    train_seconds: dict[str, float] = {}
    for pair in results["pairs"]:
        train_seconds[pair["method"]] = (
            train_seconds.get(pair["method"], 0.0) + pair["train_seconds"]
        )
    print(
        json.dumps(
            {
                "wall_seconds": round(wall, 1),
                "epochs": args.epochs,
                "step_size": step_size,
                "train_images": len(kept),
                "seeds": args.seeds,
                "methods": args.methods,
                "train_seconds_per_method": {k: round(v, 1) for k, v in train_seconds.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
