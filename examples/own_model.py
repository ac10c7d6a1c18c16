"""TRADI on your own model and training loop: track, sample, evaluate (about 10 s on a CPU).

The embedded 8x8 digits stand in for your data: digits 0-4 are in-distribution, 5-9 are the
out-of-distribution inputs the ensemble should be less confident about.

    python examples/own_model.py
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tradi


def main(epochs: int = 15, n_samples: int = 10) -> tradi.Evaluation:
    torch.manual_seed(0)
    bench = tradi.load_benchmark("digits")  # TensorSplits: .x [N, 1, 8, 8] float32, .y [N] int64
    train = DataLoader(TensorDataset(bench.train.x, bench.train.y), batch_size=32, shuffle=True)
    test = DataLoader(TensorDataset(bench.test.x, bench.test.y), batch_size=500)
    ood = DataLoader(TensorDataset(bench.ood_test.x, bench.ood_test.y), batch_size=500)

    model = nn.Sequential(  # any nn.Module
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 5)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Short runs: start the mean at the weights and the variance at 0 (see the README).
    tracker = tradi.WeightTracker(model, init_mean="weights", init_variance=0.0)
    for _ in range(epochs):
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            tracker.update()  # one Kalman step per optimizer step

    model.eval()
    posterior = tracker.posterior("diag", scale=10.0)  # the scale widens the tracked spread
    ensemble = tradi.SampledEnsemble(model, posterior, n_samples=n_samples, bn_loader=train)
    single = tradi.evaluate(lambda x: model(x).softmax(dim=1), test, ood)
    result = tradi.evaluate(ensemble, test, ood)
    for name, evaluation in (("one network", single), ("TRADI ensemble", result)):
        print(
            f"{name:15s} accuracy {evaluation.classification['accuracy']:.3f}  "
            f"NLL {evaluation.classification['nll']:.3f}  "
            f"AUROC (MCP) {evaluation.ood['mcp']['auroc']:.3f}"
        )
    return result


if __name__ == "__main__":
    main()
