"""The per-epoch history file: one row per epoch and run, equal to what `fit` returns."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from tradi.training import fit
from tradi.training.history import CSVHistory, TensorBoardHistory, history_callbacks


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def _train(callback: CSVHistory, epochs: int, tmp_path: Path | None = None) -> list[dict]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = _data()
    result = fit(
        model,
        data,
        optimizer=optimizer,
        epochs=epochs,
        val_loader=data,
        callbacks=[callback],
        progress=False,
        checkpoint_dir=tmp_path,
    )
    return result.history


def test_rows_are_the_loops_history_run_by_run(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    history = CSVHistory(path)
    first = _train(history, epochs=3)
    second = _train(history, epochs=2)  # a second network (a Deep Ensembles member)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["run"]), int(float(r["epoch"]))) for r in rows] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1)
    ]  # fmt: skip
    for row, expected in zip(rows, [*first, *second], strict=True):
        for key in ("lr", "train_loss", "val_loss", "val_accuracy"):
            assert float(row[key]) == pytest.approx(expected[key], rel=1e-12)


def test_a_resumed_run_continues_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    _train(CSVHistory(path), epochs=2, tmp_path=tmp_path / "ckpt")
    resumed = _train(CSVHistory(path), epochs=4, tmp_path=tmp_path / "ckpt")  # a new process
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(r["epoch"])) for r in rows] == [0, 1, 2, 3]
    assert {r["run"] for r in rows} == {"0"}
    assert float(rows[-1]["val_loss"]) == pytest.approx(resumed[-1]["val_loss"], rel=1e-12)


def test_tensorboard_only_when_installed(tmp_path: Path) -> None:
    installed = importlib.util.find_spec("tensorboard") is not None
    kinds = [type(c) for c in history_callbacks(tmp_path)]
    assert kinds == ([CSVHistory, TensorBoardHistory] if installed else [CSVHistory])
    if not installed:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardHistory(tmp_path)
