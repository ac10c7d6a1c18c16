"""TRADI in a Lightning project: one callback, no change to the LightningModule (seconds on CPU).

Needs the lightning extra: pip install -e ".[lightning]" from a clone (make demo installs it).

    python examples/lightning_callback.py
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import tradi
from tradi.integrations.lightning import TRADICallback


class Classifier(pl.LightningModule):
    """An ordinary LightningModule: nothing in it knows about TRADI."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main(epochs: int = 10, n_samples: int = 10, threads: int = 1) -> tradi.Evaluation:
    """Train with the callback, print and return the ensemble's evaluation."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread, as the CLI's `threads:` key; restored below
    try:
        return _run(epochs, n_samples)
    finally:
        torch.set_num_threads(previous)


def _run(epochs: int, n_samples: int) -> tradi.Evaluation:
    pl.seed_everything(0, verbose=False)
    bench = tradi.load_benchmark("digits")  # digits 0-4 in-distribution, 5-9 OOD
    train = DataLoader(TensorDataset(bench.train.x, bench.train.y), batch_size=32, shuffle=True)
    test = DataLoader(TensorDataset(bench.test.x, bench.test.y), batch_size=500)
    ood = DataLoader(TensorDataset(bench.ood_test.x, bench.ood_test.y), batch_size=500)

    callback = TRADICallback(
        covariance="diag",
        n_samples=n_samples,
        scale=10.0,  # choose it on validation data, never on the OOD test set
        # the filters' memory: one epoch of steps (17), not the default ~450 steps, which
        # 10 epochs of 17 steps would not fill (the posterior would warn)
        tracker_options={"memory": len(train)},
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Classifier()
    trainer.fit(module, train)
    result = tradi.evaluate(callback.ensemble(), test, ood)
    print(
        f"TRADI ensemble: accuracy {result.classification['accuracy']:.3f}, "
        f"ECE {result.classification['ece']:.3f}, AUROC (MCP) {result.ood['mcp']['auroc']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
