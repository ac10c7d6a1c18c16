"""Every OOD criterion of `tradi.evaluate` on MNIST against notMNIST (docs/ood-scores.md).

A short run, not a benchmark: the paper's MLP 784-200-200-200-10 (BatchNorm + ReLU, no dropout,
no weight decay), Adam lr 1e-3, batch 128, 3 epochs, one seed; TRADI by `tradi.fit_ensemble`
defaults (scale chosen on the validation split, no OOD data), 10 samples. Prints accuracy, NLL
and, per score, AUROC / FPR95 (the slides' convention) / AUPR-in in %, for the network (logits:
no ensemble criteria) and the ensemble. About 1 minute on one CPU thread.

    TRADI_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 PYTHONPATH=src \
        .venv/bin/python benchmarks/ood_scores_study.py --epochs 3 --seed 0
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tradi
from tradi.data import TensorSplit


def _mlp() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for _ in range(3):
        layers += [nn.Linear(width, 200), nn.BatchNorm1d(200), nn.ReLU()]
        width = 200
    return nn.Sequential(*layers, nn.Linear(200, 10))


def _print(label: str, result: tradi.Evaluation) -> None:
    figures = result.classification
    print(f"{label}: accuracy {figures['accuracy']:.4f}, NLL {figures['nll']:.4f}")
    for name, ood in (result.ood or {}).items():
        print(
            f"  {name:20s} AUROC {100 * ood['auroc']:.1f}  FPR95 {100 * ood['fpr95_tpr_in']:.1f}"
            f"  AUPR-in {100 * ood['aupr_in']:.1f}"
        )


def main(epochs: int, seed: int, n_samples: int) -> None:
    torch.manual_seed(seed)
    bench = tradi.load_benchmark("mnist-notmnist", seed=seed)
    assert bench.ood_test is not None

    def loader(split: TensorSplit, batch: int, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(split.x, split.y), batch_size=batch, shuffle=shuffle)

    train = loader(bench.train, 128, shuffle=True)
    val, test, ood = (loader(s, 1000) for s in (bench.val, bench.test, bench.ood_test))
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tracker = tradi.WeightTracker(model)
    for _ in range(epochs):
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            tracker.update()
    ensemble, search = tradi.fit_ensemble(model, tracker, val, bn_loader=train, n_samples=n_samples)
    print(f"scale {search.scale:.3g} (chosen on validation data)" if search else "")
    _print("network", tradi.evaluate(model, test, ood, outputs="logits"))
    _print(f"TRADI ({n_samples})", tradi.evaluate(ensemble, test, ood))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10)
    arguments = parser.parse_args()
    main(arguments.epochs, arguments.seed, arguments.samples)
