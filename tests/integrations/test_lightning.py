"""TRADICallback on a tiny LightningModule: the tracker equals a hand-written loop's, counts
optimizer steps (not batches) under gradient accumulation, survives a checkpoint resume, and
gives the sampled ensemble after fit."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")

from tradi import KernelGaussian, SampledEnsemble, WeightTracker  # noqa: E402
from tradi.integrations.lightning import TRADICallback  # noqa: E402

EPOCHS = 2


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(48, 5, generator=g), torch.randint(0, 3, (48,), generator=g))
    return DataLoader(data, batch_size=8, shuffle=False)


def trainer(callback: TRADICallback, epochs: int = EPOCHS, **options: Any) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        **options,
    )


def manual_tracker(accumulate: int = 1, step: str = "delta") -> WeightTracker:
    """The same training written by hand, as the tracker's docs say to use it."""
    module = TinyModule()
    optimizer = module.configure_optimizers()
    tracker = WeightTracker(module, step=step, optimizer=optimizer)  # type: ignore[arg-type]
    for _ in range(EPOCHS):
        for index, (x, y) in enumerate(loader()):
            # Lightning divides the loss by the accumulation count before backward
            (nn.functional.cross_entropy(module(x), y) / accumulate).backward()
            if (index + 1) % accumulate == 0:
                optimizer.step()
                tracker.update()
                optimizer.zero_grad()
    return tracker


def assert_same_state(a: dict[str, Any], b: dict[str, Any], **tolerance: float) -> None:
    assert a["names"] == b["names"] and a["num_updates"] == b["num_updates"]
    for key in ("mean", "variance", "previous"):
        if a[key] is None:
            assert b[key] is None
        else:
            torch.testing.assert_close(a[key], b[key], **tolerance)


@pytest.mark.parametrize("step", ["delta", "gradient"])
def test_tracker_equals_a_manual_loop(step: str) -> None:
    callback = TRADICallback(tracker_options={"step": step})
    trainer(callback).fit(TinyModule(), loader())
    assert callback.tracker is not None and callback.tracker.num_updates == EPOCHS * 6
    expected = manual_tracker(step=step)
    assert callback.tracker.names == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    assert_same_state(callback.tracker.state_dict(), expected.state_dict(), rtol=0, atol=0)


def test_gradient_accumulation_updates_once_per_optimizer_step() -> None:
    callback = TRADICallback()
    trainer(callback, accumulate_grad_batches=3).fit(TinyModule(), loader())
    assert callback.tracker is not None and callback.tracker.num_updates == EPOCHS * 2
    expected = manual_tracker(accumulate=3)
    # the loss scaling happens in another order than Lightning's: equal to float32 rounding
    assert_same_state(callback.tracker.state_dict(), expected.state_dict(), rtol=1e-5, atol=1e-7)


def test_resuming_from_a_checkpoint_continues_the_same_tracker(tmp_path: Path) -> None:
    whole = TRADICallback()
    trainer(whole).fit(TinyModule(), loader())
    first = TRADICallback()
    interrupted = trainer(first, epochs=1)
    interrupted.fit(TinyModule(), loader())
    interrupted.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = TRADICallback()
    trainer(resumed).fit(TinyModule(), loader(), ckpt_path=tmp_path / "epoch1.ckpt")
    assert whole.tracker is not None and resumed.tracker is not None
    assert_same_state(resumed.tracker.state_dict(), whole.tracker.state_dict(), rtol=0, atol=0)


def test_start_epoch_and_ensemble_after_fit() -> None:
    callback = TRADICallback(covariance="kernel", n_samples=4, scale=5.0, start_epoch=1)
    with pytest.raises(RuntimeError, match=r"trainer\.fit"):
        callback.ensemble()
    module = TinyModule()
    trainer(callback).fit(module, loader())
    assert callback.tracker is not None and callback.tracker.num_updates == 6  # epoch 1 only
    x = next(iter(loader()))[0]
    tracker = callback.tracker
    # zero scale: every sample is the tracked mean, evaluated here on a plain copy of the net
    mean_net = copy.deepcopy(module.net)
    mean_net.load_state_dict({k.removeprefix("net."): v for k, v in tracker.mean().items()})
    with torch.no_grad():
        by_hand = mean_net.eval()(x).softmax(-1)
    smaller = callback.ensemble(n_samples=2, covariance="diag", scale=0.0)
    assert smaller.sample_probs(x).shape == (2, 8, 3)
    torch.testing.assert_close(smaller(x), by_hand)
    # the constructor's options reach the ensemble: the kernel Gaussian of the tracked state,
    # anchored at the current weights, built here from the tracker's raw tensors
    posterior = KernelGaussian(
        tracker.mean(), tracker.variance(), tracker.weights(), rank=callback.rank, scale=5.0
    )
    reference = SampledEnsemble(module, posterior, 4, seed=callback.seed)
    ensemble = callback.ensemble()
    probs = ensemble(x)
    assert ensemble.sample_probs(x).shape == (4, 8, 3)
    torch.testing.assert_close(probs, reference(x), rtol=0, atol=0)
    assert (probs - by_hand).abs().max() > 1e-3  # scale 5 moves the prediction off the mean


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="covariance"):
        TRADICallback(covariance="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_samples"):
        TRADICallback(n_samples=0)
    with pytest.raises(ValueError, match="start_epoch"):
        TRADICallback(start_epoch=-1)
