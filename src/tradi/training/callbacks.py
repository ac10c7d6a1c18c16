"""The callbacks that turn the shared loop into TRADI or SWAG training: nothing else differs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tradi.posterior.swag import ParamFilter, SWAGCollector
from tradi.tracking import WeightTracker
from tradi.training.hooks import Callback

TrackerFactory = Callable[[nn.Module, torch.optim.Optimizer], WeightTracker]


class TrackingCallback(Callback):
    """Runs TRADI's `WeightTracker` alongside training, from epoch `start_epoch` (0-based) on.

    The tracker is created at the start of `start_epoch` (so step="delta" measures steps from
    there) by `make_tracker(model, optimizer)`, and updated after every optimizer step.
    """

    def __init__(self, make_tracker: TrackerFactory, *, start_epoch: int = 0) -> None:
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        self.make_tracker = make_tracker
        self.start_epoch = start_epoch
        self.tracker: WeightTracker | None = None
        self._model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._model, self._optimizer = model, optimizer
        self.tracker = None

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        if epoch == self.start_epoch:
            self.tracker = self._new_tracker()

    def on_after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.tracker is not None:
            self.tracker.update()

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict() if self.tracker is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["tracker"] is None:
            self.tracker = None
            return
        if self.tracker is None:
            self.tracker = self._new_tracker()
        self.tracker.load_state_dict(state["tracker"])

    def _new_tracker(self) -> WeightTracker:
        if self._model is None or self._optimizer is None:
            raise RuntimeError("TrackingCallback used before on_train_start")
        return self.make_tracker(self._model, self._optimizer)


class SWAGCallback(Callback):
    """Collects one SWAG iterate at the end of every epoch from `start_epoch` (0-based) on."""

    def __init__(
        self, *, start_epoch: int, max_rank: int = 20, param_filter: ParamFilter | None = None
    ) -> None:
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        self.start_epoch = start_epoch
        self.max_rank = max_rank
        self.param_filter = param_filter
        self.collector: SWAGCollector | None = None

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.collector = SWAGCollector(
            model, max_rank=self.max_rank, param_filter=self.param_filter
        )

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        if epoch >= self.start_epoch:
            self._require_collector().collect()

    def state_dict(self) -> dict[str, Any]:
        return self._require_collector().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._require_collector().load_state_dict(state)

    def _require_collector(self) -> SWAGCollector:
        if self.collector is None:
            raise RuntimeError("SWAGCallback used before on_train_start")
        return self.collector
