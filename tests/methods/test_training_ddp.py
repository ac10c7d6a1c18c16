"""The loop under DDP (2 gloo processes): every rank evaluates its own validation shard, yet all
ranks see the global figures, so they select the same epoch; rank 0 writes the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import tradi.distributed as td
from tradi.training import fit
from tradi.training.checkpoint import CHECKPOINT_NAME, load_checkpoint


def _data(seed: int, n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _each_rank(out: Path) -> None:
    """What every rank runs: DDP training with validation-based selection and checkpoints."""
    model = DistributedDataParallel(_model())
    train = td.shard_loader(_data(0, 64), 16, shuffle=True, seed=1)
    val = DataLoader(td.shard_dataset(_data(1, 30)), batch_size=7)  # 15 samples per rank
    result = fit(
        model,
        train,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        epochs=3,
        val_loader=val,
        select="best_val_loss",
        progress=False,
        checkpoint_dir=out / "checkpoint",
    )
    torch.save(
        {
            "history": result.history,
            "selected": result.selected_epoch,
            "weights": td.unwrap(model).state_dict(),
        },
        out / f"rank{td.rank()}.pt",
    )


def test_ranks_reduce_validation_and_agree_on_the_selected_epoch(tmp_path: Path) -> None:
    td.launch(_each_rank, 2, (tmp_path,), timeout_s=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["history"] == ranks[1]["history"]
    assert ranks[0]["selected"] == ranks[1]["selected"]
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name])

    # the reduced validation loss is the loss over the WHOLE validation set, not one shard
    model = _model()
    model.load_state_dict(ranks[0]["weights"])
    x, y = _data(1, 30).tensors
    with torch.no_grad():
        full = float(F.cross_entropy(model(x), y))
    selected = ranks[0]["history"][ranks[0]["selected"]]
    assert selected["val_loss"] == pytest.approx(full, rel=1e-6)
    assert load_checkpoint(tmp_path / "checkpoint" / CHECKPOINT_NAME)["loop"]["epoch"] == 3
