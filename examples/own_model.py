"""TRADI on your own model and training loop, as in the README's quick start (about 5 s on a CPU):
track the weights during training, `tradi.fit_ensemble`, `tradi.evaluate`.

The embedded 8x8 digits stand in for your data: digits 0-4 are in-distribution, 5-9 are the
out-of-distribution inputs the ensemble should be less confident about.

    python examples/own_model.py
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tradi


def main(epochs: int = 30, n_samples: int = 10) -> tradi.Evaluation:
    torch.manual_seed(0)
    bench = tradi.load_benchmark("digits")  # TensorSplits: .x [N, 1, 8, 8] float32, .y [N] int64

    train_loader = DataLoader(
        TensorDataset(bench.train.x, bench.train.y), batch_size=32, shuffle=True
    )
    val_loader = DataLoader(TensorDataset(bench.val.x, bench.val.y), batch_size=500)  # held out
    test_loader = DataLoader(TensorDataset(bench.test.x, bench.test.y), batch_size=500)
    ood_loader = DataLoader(TensorDataset(bench.ood_test.x, bench.ood_test.y), batch_size=500)

    # The README's quick start, line by line.
    model = nn.Sequential(  # any nn.Module
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 5)
    )
    optimizer = torch.optim.AdamW(model.parameters())  # any optimizer
    tracker = tradi.WeightTracker(model)  # tracks every weight except norm layers
    for _ in range(epochs):  # 30 x 17 steps: more than the filters' memory (~450 steps)
        for x, y in train_loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            tracker.update()  # one Kalman step per optimizer step

    # One call: the noise scale chosen on the validation loader (no OOD data), and the ensemble.
    ensemble, search = tradi.fit_ensemble(
        model, tracker, val_loader, bn_loader=train_loader, n_samples=n_samples
    )
    assert search is not None  # scale="auto" (the default) searches
    tried = ", ".join(f"{point.scale:.2g}" for point in search.points)
    print(f"noise scale {search.scale:.2g}, chosen on validation data among {tried}")
    model.eval()  # the single network, for comparison
    single = tradi.evaluate(lambda x: model(x).softmax(dim=1), test_loader, ood_loader)
    result = tradi.evaluate(ensemble, test_loader, ood_loader)
    for name, evaluation in (("one network", single), ("TRADI ensemble", result)):
        print(
            f"{name:15s} accuracy {evaluation.classification['accuracy']:.3f}  "
            f"NLL {evaluation.classification['nll']:.3f}  "
            f"AUROC (MCP) {evaluation.ood['mcp']['auroc']:.3f}"
        )
    return result


if __name__ == "__main__":
    main()
