"""Last-layer against full TRADI, and fewer BatchNorm batches, on one trained MLP (issue 13).

One TRADI run of mnist-notmnist's recipe (configs/mnist-notmnist.yaml: the paper's MLP, 30
epochs, seed 0), then from that one run:

- full: every tracked weight sampled, BatchNorm re-estimated per sample (the default);
- last layer: only ``--last`` sampled (``sample_modules``), the trunk evaluated once per input.

For each, the noise scale is chosen on the validation split by NLL (``select_scale``, the grid
below), never on notMNIST; then test metrics (MNIST test, notMNIST as OOD), the ensemble's
build time and its test time. Last, the full ensemble is rebuilt with BatchNorm statistics from
fewer training batches (``bn_batches``), with build time and validation NLL / AUROC against
Fashion-MNIST (``ood_val``). Writes JSON to ``--out``.

    TRADI_DATA_DIR=../shared/data .venv/bin/python benchmarks/study_sample_modules.py \
        --out benchmarks/study_sample_modules.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from tradi.data import load_benchmark
from tradi.experiments.config import load_config
from tradi.experiments.evaluation import mean_probs
from tradi.experiments.loaders import TensorBatches
from tradi.methods import TRADI, build_method
from tradi.metrics import classification_metrics, ood_metrics
from tradi.models import build_model

GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
BN_BATCHES = (None, 100, 30, 10)


def _metrics(predict: Any, loaders: dict[str, TensorBatches], ood: str) -> dict[str, float]:
    probs = mean_probs(predict, loaders["in"])
    labels = torch.cat([y for _, y in loaders["in"]])
    metrics = classification_metrics(probs, labels)
    scores_out = mean_probs(predict, loaders[ood]).max(dim=1).values
    metrics.update(ood_metrics(probs.max(dim=1).values, scores_out))
    return {k: float(v) for k, v in metrics.items()}


def _variant(method: TRADI, modules: tuple[str, ...] | None, val: Any, test: Any) -> dict:
    method.options = dataclasses.replace(method.options, sample_modules=modules)
    search = method.select_scale(val["in"], GRID)
    started = time.perf_counter()
    method._ensemble = method.ensemble()
    build = time.perf_counter() - started
    started = time.perf_counter()
    metrics = _metrics(method.iter_predict, test, "ood")
    return {
        "sample_modules": modules,
        "scale": search.scale,
        "val_nll_by_scale": search.scores,
        "build_seconds": build,
        "test_seconds": time.perf_counter() - started,
        "test": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/study_sample_modules.json"))
    parser.add_argument("--last", default="layers.12", help="the MLP's last Linear layer")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's (30)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config("mnist-notmnist")
    bench = load_benchmark("mnist-notmnist", val_fraction=config.data.val_fraction, seed=0)
    train = config.train_config(seed=0, progress=False)
    if args.epochs is not None:
        train = dataclasses.replace(train, epochs=args.epochs)
    model_options = dict(config.model.options)
    method = build_method(
        "tradi",
        lambda: build_model("mlp", bench.num_classes, bench.input_shape, **model_options),
        train=train,
        **(dict(config.methods["tradi"]) | {"scale": 1.0}),
    )
    assert isinstance(method, TRADI)
    train_loader = TensorBatches(bench.train, config.data.batch_size, shuffle=True, seed=0)
    batches = config.data.eval_batch_size
    val = {
        "in": TensorBatches(bench.val, batches),
        "ood_val": TensorBatches(bench.ood_val, batches),
    }
    test = {"in": TensorBatches(bench.test, batches), "ood": TensorBatches(bench.ood_test, batches)}
    started = time.perf_counter()
    method.fit(train_loader)
    result: dict[str, Any] = {"train_seconds": time.perf_counter() - started, "seed": 0}
    network = method.model.eval()

    def mcp(loader: TensorBatches) -> Any:
        with torch.no_grad():
            for x, _ in loader:
                yield network(x).softmax(1)[None]

    result["mcp"] = _metrics(mcp, test, "ood")
    result["full"] = _variant(method, None, val, test)
    full_scale = result["full"]["scale"]
    result["last_layer"] = _variant(method, (args.last,), val, test)
    method.options = dataclasses.replace(method.options, sample_modules=None)
    result["bn_batches"] = {}
    for bn_batches in BN_BATCHES:
        method.options = dataclasses.replace(method.options, bn_batches=bn_batches)
        started = time.perf_counter()
        method._ensemble = method.ensemble(full_scale)
        build = time.perf_counter() - started
        metrics = _metrics(method.iter_predict, val, "ood_val")
        result["bn_batches"][str(bn_batches)] = {"build_seconds": build, "val": metrics}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
