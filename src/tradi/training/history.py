"""Per-epoch history of every training run: a ``metrics.csv`` file, and TensorBoard when installed.

Both are ordinary loop callbacks (`tradi.training.Callback`): add them to ``fit(callbacks=...)``
in your own code, or let the experiment runner add them for every method and seed.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tradi.distributed import is_rank_zero
from tradi.training.hooks import Callback

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


class CSVHistory(Callback):
    """Writes ``path`` (a CSV file) after every epoch: one row per epoch of every run.

    Columns: ``run`` (0-based count of the trainings this callback saw: the members of a Deep
    Ensemble are runs 0..M-1), then the loop's epoch figures (``epoch``, ``lr``,
    ``train_loss``, ``val_loss``, ``val_accuracy``; loss in nats, accuracy a fraction). The
    file is replaced atomically, so a crash leaves the previous epoch's complete file; rows
    are part of the checkpointed state, so a resumed run continues the same file. Only rank 0
    writes in a distributed run.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.run = -1
        self.rows: list[dict[str, float]] = []

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.run += 1
        self.rows = []

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        self.rows.append({"run": self.run, **metrics})
        if is_rank_zero():
            self._write()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state["rows"]]

    def _write(self) -> None:
        earlier = []
        if self.path.exists():  # the rows of earlier runs (members) stay
            with self.path.open(newline="") as handle:
                earlier = [r for r in csv.DictReader(handle) if int(r["run"]) < self.run]
        rows = [*earlier, *self.rows]
        fields = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(buffer.getvalue())
        os.replace(tmp, self.path)


class TensorBoardHistory(Callback):
    """Logs the loop's epoch figures as TensorBoard scalars under ``log_dir`` (tag
    ``run_<i>/<figure>``, step = epoch). Needs the ``tensorboard`` package; raises ImportError
    saying so otherwise. Only rank 0 writes."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "TensorBoardHistory needs the tensorboard package: pip install tensorboard"
            )
        self._writer: SummaryWriter | None = None
        self.log_dir = Path(log_dir)
        self.run = -1

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.run += 1

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        if not is_rank_zero():
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        for key, value in metrics.items():
            if key != "epoch":
                self._writer.add_scalar(f"run_{self.run}/{key}", value, epoch)
        self._writer.flush()  # on disk after every epoch


def history_callbacks(folder: str | os.PathLike[str]) -> list[Callback]:
    """``folder/metrics.csv``, plus TensorBoard event files in ``folder/tensorboard`` when the
    ``tensorboard`` package is installed."""
    callbacks: list[Callback] = [CSVHistory(Path(folder) / "metrics.csv")]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(TensorBoardHistory(Path(folder) / "tensorboard"))
    return callbacks
