"""TRADI on your own model and training loop: the README's quick start and docs/own-model.md.

Track the weights during training, `tradi.explore` (the modes: the recommended default),
`tradi.fit_ensemble` (the paper's TRADI), `tradi.evaluate`, and (with
``--figures DIR``) the tutorial's two figures: reliability diagrams and MCP histograms. The
embedded 8x8 digits stand in for your data: digits 0-4 are in-distribution, 5-9 are the
out-of-distribution inputs the ensemble should be less confident about.

    python examples/own_model.py                      # ~5 s of CPU with one thread
    python examples/own_model.py --figures docs/img   # also writes the tutorial's PNGs

One thread, as the experiment runner's `threads: 1`: torch's default (one thread per core)
made this small network 5-10x slower on a busy 2-core machine (docs/own-model.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tradi
from tradi.data import TensorSplit


# --8<-- [start:data]
def loaders() -> tuple[DataLoader, DataLoader, DataLoader, DataLoader]:
    """Train, validation, test and OOD test loaders of the embedded digits."""
    bench = tradi.load_benchmark("digits")  # .x [N, 1, 8, 8] float32, .y [N] int64

    def loader(split: TensorSplit, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(split.x, split.y), batch_size=32, shuffle=shuffle)

    return loader(bench.train, True), loader(bench.val), loader(bench.test), loader(bench.ood_test)


# --8<-- [end:data]


# --8<-- [start:train]
def train(train_loader: DataLoader, epochs: int) -> tuple[nn.Module, tradi.WeightTracker]:
    """Your model and training loop, with two added lines: the tracker and its update."""
    model = nn.Sequential(  # any nn.Module
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 5)
    )
    optimizer = torch.optim.AdamW(model.parameters())  # any optimizer
    # memory: the filters' memory in optimizer steps; one epoch, so that the tracked variance
    # is full after the first epoch (the default, ~450 steps, suits runs of thousands of steps)
    tracker = tradi.WeightTracker(model, memory=len(train_loader))
    for _ in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            tracker.update()  # one Kalman step per optimizer step
    return model, tracker


# --8<-- [end:train]


def main(
    epochs: int = 30,
    n_samples: int = 10,
    figures: str | Path | None = None,
    threads: int = 1,
    seed: int = 0,
) -> tradi.Evaluation:
    """Train, explore the modes and fit the paper's ensemble, print both evaluations and return
    the modes'; figures into ``figures``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # as the CLI's `threads:` key; restored below
    try:
        return _run(epochs, n_samples, figures, seed)
    finally:
        torch.set_num_threads(previous)


def _run(epochs: int, n_samples: int, figures: str | Path | None, seed: int) -> tradi.Evaluation:
    torch.manual_seed(seed)
    train_loader, val_loader, test_loader, ood_loader = loaders()
    model, tracker = train(train_loader, epochs)
    # --8<-- [start:fit]
    # One call: 2 short tracked cycles from the trained weights (+4 epochs), each cycle's end a
    # mode, the modes' predictives averaged; the spread chosen on the validation loader (no OOD
    # data). The cycles' optimizer is a factory: each cycle trains its own copy of the network.
    modes = tradi.explore(
        model, train_loader, val_loader, tracker=tracker, cycles=2, epochs_per_cycle=2,
        optimizer=lambda params: torch.optim.AdamW(params, weight_decay=0.0), seed=seed,
    )  # fmt: skip
    print(f"TRADI modes: +{modes.cost_epochs} epochs, {len(modes.modes)} modes")
    # --8<-- [end:fit]
    # --8<-- [start:paper]
    # The paper's TRADI: weight sets sampled around the one trained network, averaged.
    ensemble, search = tradi.fit_ensemble(
        model, tracker, val_loader, bn_loader=train_loader, n_samples=n_samples
    )
    assert search is not None  # scale="auto" (the default) searches
    tried = ", ".join(f"{point.scale:.2g}" for point in search.points)
    print(f"noise scale {search.scale:.2g}, chosen on validation data among {tried}")
    # --8<-- [end:paper]
    # --8<-- [start:evaluate]
    model.eval()  # the single network, for comparison
    results = {
        "one network": tradi.evaluate(lambda x: model(x).softmax(dim=1), test_loader, ood_loader),
        "TRADI modes": tradi.evaluate(modes.predictive, test_loader, ood_loader),
        "TRADI ensemble": tradi.evaluate(ensemble, test_loader, ood_loader),
    }
    for name, evaluation in results.items():
        c, ood = evaluation.classification, evaluation.ood["mcp"]
        print(
            f"{name:15s} accuracy {c['accuracy']:.3f}  NLL {c['nll']:.3f}  ECE {c['ece']:.3f}  "
            f"AUROC {ood['auroc']:.3f}  FPR95 {ood['fpr95_tpr_in']:.3f}"
        )
    # --8<-- [end:evaluate]
    if figures is not None:
        labels = torch.cat([y for _, y in test_loader])
        save_figures(results, labels, Path(figures))
    return results["TRADI modes"]


# --8<-- [start:figures]
def save_figures(results: dict[str, tradi.Evaluation], labels: torch.Tensor, out: Path) -> None:
    """own-model-reliability.png and own-model-mcp.png in ``out``: reliability diagrams of
    the in-distribution test data, and the MCP of in-distribution against OOD inputs."""
    from tradi.metrics import calibration_bins
    from tradi.plots import confidence_histograms, reliability_diagram

    bins = {name: calibration_bins(r.probs, labels) for name, r in results.items()}
    scores = {name: (r.scores_in["mcp"], r.scores_out["mcp"]) for name, r in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    for figure, name in (
        (reliability_diagram(bins), "own-model-reliability.png"),
        (confidence_histograms(scores, n_bins=20, score_name="MCP"), "own-model-mcp.png"),
    ):
        figure.savefig(out / name, dpi=80, bbox_inches="tight")
        print(f"wrote {out / name}")


# --8<-- [end:figures]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", type=Path, help="folder for the tutorial's PNG figures")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    args = parser.parse_args()
    main(figures=args.figures, threads=args.threads, seed=args.seed)
