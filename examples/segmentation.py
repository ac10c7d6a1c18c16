"""Per-pixel TRADI on a small segmentation network (synthetic 16x16 scenes, ~4 s of CPU).

Scenes hold a background (class 0) and bright squares (class 1) or dark squares (class 2); the
test scenes also hold a dim grey square never seen in training (intensity 1, between the
background's 0 and the bright squares' 2): its pixels are the out-of-distribution pixels, as
pedestrians are in the CamVid-OOD protocol. The score map is the per-pixel maximum class
probability (MCP) of the averaged prediction; the noise scale is chosen on validation scenes
without the grey square (no OOD data used).

An object the network confidently assigns to a known class cannot be flagged by any MCP score:
an earlier version's striped object (rows of +3 and -3) was taken for a bright or dark square,
with an OOD AUROC of 0.2 for the ensemble at the scale chosen on validation data.

    python examples/segmentation.py
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import tradi
from tradi.metrics import ood_metrics

OOD = 3  # label of the grey square's pixels (ignored by the in-distribution metrics)


def scenes(n: int, seed: int, with_unknown: bool) -> tuple[Tensor, Tensor]:
    """``n`` images [n, 1, 16, 16] float32 and label maps [n, 16, 16] int64."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 1, 16, 16, generator=generator)
    y = torch.zeros(n, 16, 16, dtype=torch.int64)
    for i in range(n):
        for label, value in ((1, 2.0), (2, -2.0)):
            r, c = torch.randint(0, 11, (2,), generator=generator).tolist()
            x[i, 0, r : r + 5, c : c + 5] += value
            y[i, r : r + 5, c : c + 5] = label
        if with_unknown:
            r, c = torch.randint(0, 11, (2,), generator=generator).tolist()
            grey = 1.0 + 0.3 * torch.randn(5, 5, generator=generator)
            x[i, 0, r : r + 5, c : c + 5] = grey
            y[i, r : r + 5, c : c + 5] = OOD
    return x, y


def main(epochs: int = 8, n_samples: int = 8, threads: int = 1) -> dict[str, float]:
    """Train, sample, print and return pixel accuracy and the OOD pixels' AUROC."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread, as the CLI's `threads:` key; restored below
    try:
        return _run(epochs, n_samples)
    finally:
        torch.set_num_threads(previous)


def train(loader: DataLoader, epochs: int) -> tuple[nn.Module, tradi.WeightTracker]:
    """A small fully convolutional network trained on ``loader``, its weights tracked."""
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 3, 1),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # memory: the filters' memory in steps, here one epoch (8 steps); 64 steps in all would not
    # fill the default memory (~450 steps)
    tracker = tradi.WeightTracker(model, memory=len(loader))
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()  # [N, C, H, W] vs [N, H, W]
            optimizer.step()
            tracker.update()
    return model, tracker


def pixel_scores(predictor: Any, test: DataLoader, name: str) -> dict[str, float]:
    """Pixel accuracy and ECE of the known classes, AUROC and FPR95 of the OOD pixels (MCP)."""
    result = tradi.evaluate(predictor, test, ignore_index=OOD)  # per pixel, known classes only
    labels = torch.cat([y for _, y in test])
    mcp = result.scores_in["mcp"]  # [N, 16, 16]
    pixels = ood_metrics(mcp[labels != OOD], mcp[labels == OOD])
    print(
        f"{name:15s} pixel accuracy {result.classification['accuracy']:.3f}, ECE "
        f"{result.classification['ece']:.3f}, OOD pixels: AUROC {pixels['auroc']:.3f}, "
        f"FPR95 {pixels['fpr95_tpr_in']:.3f}"
    )
    return {"accuracy": result.classification["accuracy"], "auroc": pixels["auroc"]}


def _run(epochs: int, n_samples: int) -> dict[str, float]:
    torch.manual_seed(0)
    train_loader = DataLoader(TensorDataset(*scenes(256, 0, False)), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(*scenes(64, 2, False)), batch_size=64)  # no grey square
    test = DataLoader(TensorDataset(*scenes(64, 1, True)), batch_size=64)
    model, tracker = train(train_loader, epochs)
    # the noise scale chosen on validation scenes (no grey square: no OOD data used)
    ensemble, search = tradi.fit_ensemble(model, tracker, val, n_samples=n_samples)
    assert search is not None
    print(f"noise scale {search.scale:.2g}, chosen on validation scenes")
    model.eval()
    pixel_scores(lambda x: model(x).softmax(dim=1), test, "one network")
    return pixel_scores(ensemble, test, "TRADI ensemble")


if __name__ == "__main__":
    main()
