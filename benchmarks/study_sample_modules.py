"""Last-layer against full TRADI, and fewer BatchNorm batches, on one trained network (issue 13).

One TRADI run of a config's recipe (mnist-notmnist: the paper's MLP, 30 epochs; camvid-ood:
ENet, ``--epochs`` for a short budget), seed 0, then from that one run:

- full: every tracked weight sampled, BatchNorm re-estimated per sample (the default);
- last layer: only ``--last`` sampled (``sample_modules``), the trunk evaluated once per input.

For each, the noise scale is chosen on the validation split by the config's rule
(``select_scale``; for the last layer the range ends at 1e5), never on the OOD test set; then
the runner's test metrics (`evaluate`), the ensemble's
build time and its test time. Last (mnist-notmnist), the full ensemble is rebuilt with BatchNorm
statistics from fewer training batches (``bn_batches``), with build time and validation NLL /
AUROC against Fashion-MNIST (``ood_val``). Writes JSON to ``--out``.

    TRADI_DATA_DIR=../shared/data PYTHONPATH=. .venv/bin/python \
        benchmarks/study_sample_modules.py --config mnist-notmnist --out study.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from tradi.data import Benchmark, load_benchmark
from tradi.experiments.config import load_config
from tradi.experiments.evaluation import evaluate
from tradi.experiments.loaders import TensorBatches
from tradi.experiments.runner import loss_function
from tradi.methods import TRADI, build_method
from tradi.models import build_model
from tradi.selection import ScaleSelection

#: the last layer alone may need larger multipliers: its search range ends higher
LAST_LAYER_HIGH = 1e5
BN_BATCHES = (None, 100, 30, 10)
#: the last layer of each benchmark's model
LAST = {"mnist-notmnist": "layers.12", "camvid-ood": "classifier"}


def _mcp(network: torch.nn.Module) -> Any:
    def predict(loader: TensorBatches) -> Any:
        with torch.no_grad():
            for x, _ in loader:
                yield network(x).softmax(1)[None]

    return predict


def _test(predict: Any, bench: Benchmark, test: TensorBatches, ood: Any) -> dict[str, float]:
    return evaluate(lambda: predict, bench, test, ood).metrics


def _timed_ensemble(method: TRADI, scale: float) -> float:
    """Seconds to build the method's ensemble at ``scale`` afresh (its kept one dropped)."""
    method._ensemble = None
    started = time.perf_counter()
    method.ensemble(scale)
    return time.perf_counter() - started


def _variant(
    method: TRADI,
    modules: tuple[str, ...] | None,
    selection: ScaleSelection,
    val: Any,
    tests: tuple,
) -> dict:
    method.options = dataclasses.replace(method.options, sample_modules=modules)
    method._ensemble = None
    search = method.select_scale(val, selection)
    build = _timed_ensemble(method, search.scale)
    started = time.perf_counter()
    metrics = _test(method.iter_predict, *tests)
    return {
        "sample_modules": modules,
        "scale": search.scale,
        "val_nll_by_scale": [(p.scale, p.val_nll) for p in search.points],
        "build_seconds": build,
        "test_seconds": time.perf_counter() - started,
        "test": metrics,
    }


def _bn_batches(method: TRADI, scale: float, bench: Benchmark, batch: int) -> dict[str, Any]:
    """The full ensemble with statistics from fewer batches: build time, validation metrics."""
    val_in, val_ood = TensorBatches(bench.val, batch), TensorBatches(bench.ood_val, batch)
    method.options = dataclasses.replace(method.options, sample_modules=None)
    rows = {}
    for bn_batches in BN_BATCHES:
        method.options = dataclasses.replace(method.options, bn_batches=bn_batches)
        build = _timed_ensemble(method, scale)
        metrics = _test(method.iter_predict, bench, val_in, val_ood)
        rows[str(bn_batches)] = {"build_seconds": build, "val": metrics}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="mnist-notmnist", choices=sorted(LAST))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/study_sample_modules.json"))
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    bench = load_benchmark(config.benchmark, val_fraction=config.data.val_fraction, seed=0)
    train = config.train_config(seed=0, progress=False)
    if args.epochs is not None:
        train = dataclasses.replace(train, epochs=args.epochs)
    model = config.model
    method = build_method(
        "tradi",
        lambda: build_model(model.name, bench.num_classes, bench.input_shape, **model.options),
        train=train,
        loss_fn=loss_function(bench),
        **(dataclasses.asdict(config.method_options("tradi")) | {"scale": 1.0}),
    )
    assert isinstance(method, TRADI)
    batch = config.data.eval_batch_size
    ood = None if bench.ood_test is None else TensorBatches(bench.ood_test, batch)
    tests = (bench, TensorBatches(bench.test, batch), ood)
    val = TensorBatches(bench.val, batch)
    started = time.perf_counter()
    method.fit(TensorBatches(bench.train, config.data.batch_size, shuffle=True, seed=0))
    result: dict[str, Any] = {
        "config": args.config,
        "epochs": train.epochs,
        "seed": 0,
        "train_seconds": time.perf_counter() - started,
    }
    assert method.model is not None
    result["mcp"] = _test(_mcp(method.model.eval()), *tests)
    selection = config.scale_selection  # the config's no-OOD rule
    result["full"] = _variant(method, None, selection, val, tests)
    last = dataclasses.replace(selection, high=LAST_LAYER_HIGH)
    result["last_layer"] = _variant(method, (LAST[args.config],), last, val, tests)
    if bench.ood_val is not None:
        result["bn_batches"] = _bn_batches(method, result["full"]["scale"], bench, batch)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
