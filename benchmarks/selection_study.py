"""The noise-scale rule study (docs/selection.md): which no-OOD rule should `scale="auto"` use?

TRADI is trained ONCE per (config, seed) with the shipped recipe; its network is also the MCP
baseline (tracking never changes training). Every candidate rule then chooses a scale from
VALIDATION figures only; the rules are compared on validation figures; test and OOD test figures
are printed in a separate block, to be read only after the rule is fixed.

Candidate rules (the tolerance 0.10 was fixed before any run):
  A  nll_tolerance  the largest scale with val NLL <= 1.10 x the network's (library search)
  B  min_nll        the lowest val NLL (library search: ladder + golden section)
  C  err_auroc      among the scales A's search evaluated within its NLL bound, the one with
                    the highest val misclassification AUROC (max class probability separating
                    right from wrong val predictions)
Decision, declared before the runs: the rule whose choice keeps val NLL within 1.10 x the
network's and val accuracy within 0.2 pt of it, and has the largest scale (the most diverse
ensemble the in-distribution data accepts); C wins over A only if its val error AUROC is higher.

For digits the far-OOD set is the in-distribution test images with inverted intensities
(x -> max - x, declared before any run); the near-OOD set is the config's (digits 5-9).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/selection_study.py digits --seed 0
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/selection_study.py mnist-notmnist --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tradi.data import TensorSplit, load_benchmark
from tradi.experiments import load_config
from tradi.experiments.loaders import TensorBatches
from tradi.experiments.runner import loss_function
from tradi.methods import TRADI, build_method
from tradi.metrics import classification_metrics, ood_metrics
from tradi.models import build_model
from tradi.selection import ScaleSelection, network_predict


def _probs(predict: Any, loader: TensorBatches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([predict(batch[0]).cpu() for batch in loader])


def _labels(loader: TensorBatches) -> torch.Tensor:
    return torch.cat([batch[1] for batch in loader])


def _error_auroc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of the max class probability, right predictions positive, wrong ones negative."""
    confidence, predicted = probs.max(dim=1)
    right = predicted == labels
    if right.all() or not right.any():
        return float("nan")
    return ood_metrics(confidence[right], confidence[~right])["auroc"]


def _figures(predict: Any, sets: dict[str, TensorBatches], ood: dict[str, TensorBatches]) -> dict:
    val_probs, test_probs = _probs(predict, sets["val"]), _probs(predict, sets["test"])
    val_labels, test_labels = _labels(sets["val"]), _labels(sets["test"])
    val = classification_metrics(val_probs, val_labels)
    test = classification_metrics(test_probs, test_labels)
    row = {
        "val_nll": val["nll"],
        "val_accuracy": val["accuracy"],
        "val_error_auroc": _error_auroc(val_probs, val_labels),
        "test_nll": test["nll"],
        "test_accuracy": test["accuracy"],
    }
    for name, loader in ood.items():
        scores = _probs(predict, loader).max(dim=1).values
        metrics = ood_metrics(test_probs.max(dim=1).values, scores)
        row[f"{name}_auroc"] = metrics["auroc"]
        row[f"{name}_fpr95"] = metrics["fpr95_tpr_in"]
    return row


def study_sets(name: str) -> tuple[Any, Any, dict[str, TensorBatches], dict[str, TensorBatches]]:
    """The config, its benchmark, the validation and test batches and the OOD sets of a study:
    the config's near-OOD set, and for digits the far-OOD set declared before any run (the test
    images with inverted intensities, x -> max + min - x)."""
    config = load_config(name)
    bench = load_benchmark(
        config.benchmark, val_fraction=config.data.val_fraction, seed=config.data.split_seed
    )
    size = config.data.eval_batch_size
    sets = {"val": TensorBatches(bench.val, size), "test": TensorBatches(bench.test, size)}
    ood = {"near" if bench.name == "digits" else "ood": TensorBatches(bench.ood_test, size)}
    if bench.name == "digits":
        x = bench.test.x
        ood["far"] = TensorBatches(TensorSplit(x.max() + x.min() - x, bench.test.y), size)
    return config, bench, sets, ood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/selection_study"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, bench, sets, ood = study_sets(args.config)
    options = {**config.methods["tradi"], "scale": 1.0}
    factory = partial(
        build_model, config.model.name, bench.num_classes, bench.input_shape, **config.model.options
    )
    method = build_method(
        "tradi",
        factory,
        train=config.train_config(args.seed, progress=False),
        loss_fn=loss_function(bench),
        **options,
    )
    assert isinstance(method, TRADI)
    train = TensorBatches(bench.train, config.data.batch_size, shuffle=True, seed=args.seed)
    started = time.perf_counter()
    method.fit(train, sets["val"])
    print(f"trained in {time.perf_counter() - started:.0f}s", flush=True)
    assert method.model is not None
    result: dict[str, Any] = {"config": args.config, "seed": args.seed}
    result["mcp"] = _figures(network_predict(method.model), sets, ood)
    result["untuned"] = _figures(method.ensemble(1.0), sets, ood)
    result["rules"] = {}
    searches = {}
    # the shipped rule's settings for A; B on a narrower range with one golden step (CPU time)
    selections = {
        "nll_tolerance": ScaleSelection(),
        "min_nll": ScaleSelection("min_nll", iterations=1, low=0.1, high=100.0),
    }
    for rule, selection in selections.items():
        searches[rule] = method.select_scale(sets["val"], selection)
        row = _figures(method.predict_mean, sets, ood)  # the ensemble the search kept
        result["rules"][rule] = {"scale": searches[rule].scale, **row}
        result[f"{rule}_search"] = dataclasses.asdict(searches[rule])
        print(rule, result["rules"][rule], f"{searches[rule].seconds:.0f}s", flush=True)
    # C's candidates: the factor-10 steps of A's search that kept the bound
    ladder = {1.0, 10.0, 100.0, 1000.0, 0.1, 0.01}
    within = [
        p.scale for p in searches["nll_tolerance"].points if p.admissible and p.scale in ladder
    ]
    errors = {}
    for scale in within:
        ensemble = method.ensemble(scale)
        errors[scale] = _error_auroc(_probs(ensemble, sets["val"]), _labels(sets["val"]))
    best = max(sorted(within), key=lambda s: errors[s])
    result["err_auroc_by_scale"] = errors
    result["rules"]["err_auroc"] = {"scale": best, **_figures(method.ensemble(best), sets, ood)}
    _print(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.config}_seed{args.seed}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"written {path}")


def _print(result: dict[str, Any]) -> None:
    val_keys = ("val_nll", "val_accuracy", "val_error_auroc")
    print("\nVALIDATION (decide here)")
    print("MCP", {k: round(result["mcp"][k], 4) for k in val_keys})
    print("x1", {k: round(result["untuned"][k], 4) for k in val_keys})
    for rule, row in result["rules"].items():
        print(rule, f"scale {row['scale']:.3g}", {k: round(row[k], 4) for k in val_keys})
    print("\nTEST (read after the rule is fixed)")
    test_keys = [k for k in result["mcp"] if k not in val_keys]
    print("MCP", {k: round(result["mcp"][k], 4) for k in test_keys})
    print("x1", {k: round(result["untuned"][k], 4) for k in test_keys})
    for rule, row in result["rules"].items():
        print(rule, f"scale {row['scale']:.3g}", {k: round(row[k], 4) for k in test_keys})


if __name__ == "__main__":
    main()
