"""The README's quick start on a model that is not in the library, short and long runs.

A small CNN with BatchNorm and dropout (not one of tradi.models) on the embedded digits (0-4 in,
5-9 OOD), AdamW at its defaults, trained as the quick start writes it. Per seed and run length: the
network alone (MCP), the quick start's `fit_ensemble` with every default, `tradi.explore`'s modes
(2 cycles of 2 epochs, AdamW at the same learning rate, no weight decay), the network trained
for those 4 more epochs instead (the same compute as plain training), and a Deep Ensemble of 3
networks trained from seeds no other seed uses. Test accuracy %, NLL and near-OOD AUROC %.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/quickstart_own_model.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tradi


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2),
        )  # fmt: skip
        self.head = nn.Linear(128, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _loaders(seed: int) -> tuple[DataLoader, ...]:
    bench = tradi.load_benchmark("digits")
    gen = torch.Generator().manual_seed(seed)

    def make(split: tradi.data.TensorSplit, shuffle: bool = False) -> DataLoader:
        data = TensorDataset(split.x, split.y)
        return DataLoader(data, batch_size=32, shuffle=shuffle, generator=gen if shuffle else None)

    return make(bench.train, True), make(bench.val), make(bench.test), make(bench.ood_test)


def _train(seed: int, epochs: int, train: DataLoader) -> tuple[nn.Module, tradi.WeightTracker]:
    torch.manual_seed(seed)
    model = SmallCNN()
    optimizer = torch.optim.AdamW(model.parameters())
    tracker = tradi.WeightTracker(model, memory=len(train))
    for _ in range(epochs):
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            tracker.update()
    return model.eval(), tracker


def _figures(predictor: object, test: DataLoader, ood: DataLoader) -> dict[str, float]:
    result = tradi.evaluate(predictor, test, ood, scores=("msp",))
    assert result.ood is not None
    return {
        "acc": 100 * result.classification["accuracy"],
        "nll": result.classification["nll"],
        "auroc": 100 * result.ood["msp"]["auroc"],
    }


def run(seed: int, epochs: int) -> dict[str, dict[str, float]]:
    train, val, test, ood = _loaders(seed)
    model, tracker = _train(seed, epochs, train)
    rows = {"network (MCP)": _figures(nn.Sequential(model, nn.Softmax(dim=1)), test, ood)}
    ensemble, _ = tradi.fit_ensemble(model, tracker, val, bn_loader=train)
    rows["fit_ensemble (defaults)"] = _figures(ensemble, test, ood)
    modes = tradi.explore(
        model, train, val, optimizer=lambda p: torch.optim.AdamW(p, weight_decay=0.0),
        cycles=2, epochs_per_cycle=2, tracker=tracker, seed=seed,
    )  # fmt: skip
    rows["explore (modes)"] = _figures(modes.predictive, test, ood)
    longer, _ = _train(seed, epochs + modes.cost_epochs, train)  # explore's compute, as training
    rows[f"network, +{modes.cost_epochs} epochs"] = _figures(
        nn.Sequential(longer, nn.Softmax(dim=1)), test, ood
    )
    members = [model] + [_train(seed + m * 1_000_000, epochs, train)[0] for m in (1, 2)]

    def deep_ensemble(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)

    with torch.no_grad():
        rows["Deep Ensemble (3)"] = _figures(deep_ensemble, test, ood)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 40])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for epochs in args.epochs:
        results = [run(seed, epochs) for seed in args.seeds]
        print(f"\n{epochs} epochs, seeds {args.seeds}: mean (min-max) over seeds")
        for name in results[0]:
            cells = []
            for key in ("acc", "nll", "auroc"):
                values = [r[name][key] for r in results]
                digits = 4 if key == "nll" else 2
                cells.append(
                    f"{key} {statistics.mean(values):.{digits}f} "
                    f"({min(values):.{digits}f}-{max(values):.{digits}f})"
                )
            print(f"  {name:24s}", "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
