"""Per-pixel TRADI on a small segmentation network (synthetic 16x16 scenes, seconds on CPU).

Scenes hold a background (class 0) and bright squares (class 1) or dark squares (class 2); the
test scenes also hold a striped object never seen in training: its pixels are the
out-of-distribution pixels, as pedestrians are in the CamVid-OOD protocol. The score map is the
per-pixel maximum class probability (MCP) of the averaged prediction.

    python examples/segmentation.py
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import tradi
from tradi.metrics import ood_metrics

OOD = 3  # label of the unseen object's pixels (ignored by the in-distribution metrics)


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
            stripes = torch.tensor([3.0, -3.0]).repeat(3)[:5]
            x[i, 0, r : r + 5, c : c + 5] = stripes.view(5, 1)
            y[i, r : r + 5, c : c + 5] = OOD
    return x, y


def main(epochs: int = 8, n_samples: int = 8) -> dict[str, float]:
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(*scenes(256, 0, False)), batch_size=32, shuffle=True)
    test = DataLoader(TensorDataset(*scenes(64, 1, True)), batch_size=64)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 3, 1),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    tracker = tradi.WeightTracker(model, init_mean="weights", init_variance=0.0)
    for _ in range(epochs):
        for x, y in train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()  # [N, C, H, W] vs [N, H, W]
            optimizer.step()
            tracker.update()

    posterior = tracker.posterior("diag", scale=10.0)  # choose the scale on validation data
    ensemble = tradi.SampledEnsemble(model, posterior, n_samples=n_samples)
    result = tradi.evaluate(ensemble, test, ignore_index=OOD)  # per pixel, known classes only
    labels = torch.cat([y for _, y in test])
    mcp = result.scores_in["mcp"]  # [N, 16, 16]
    pixels = ood_metrics(mcp[labels != OOD], mcp[labels == OOD])
    print(
        f"pixel accuracy {result.classification['accuracy']:.3f}, ECE "
        f"{result.classification['ece']:.3f}, OOD pixels: AUROC {pixels['auroc']:.3f}, "
        f"FPR95 {pixels['fpr95_tpr_in']:.3f}"
    )
    return {"accuracy": result.classification["accuracy"], "auroc": pixels["auroc"]}


if __name__ == "__main__":
    main()
