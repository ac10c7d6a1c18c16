"""What the training loop (`tradi.training.loop.fit`) calls and what it returns: the loss
function, the learning-rate schedule, the callbacks and their timing, and the `FitResult`.

Callbacks (tracking, SWA collection, history files) and methods build on these alone, without
the loop itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


class Scheduler(Protocol):
    """What the loop needs of a learning-rate schedule: one ``step()`` per epoch, and state."""

    def step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class Callback:
    """Hooks into ``fit``. Override what you need; state in ``state_dict`` is checkpointed.

    Order per epoch: ``on_epoch_start``, then per batch the forward and backward passes inside
    every callback's ``step_context`` and ``on_after_step`` after ``optimizer.step()``, then ``on_epoch_end`` with that epoch's metrics (before the scheduler steps). ``epoch`` and
    ``step`` count from 0 and 1 respectively. On resume, ``on_train_start`` runs first and
    ``load_state_dict`` then restores the saved state.
    """

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first epoch (and again, before loading state, on resume)."""

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called before the first batch of every epoch."""

    def step_context(self) -> AbstractContextManager[object]:
        """Entered around each batch's forward and backward passes (not the optimizer step):
        e.g. IVON evaluates the gradient at weights sampled from its posterior in here."""
        return nullcontext()

    def on_after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Called right after every ``optimizer.step()``; ``step`` is the number taken so far."""

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        """Called after validation; ``metrics`` holds the epoch's train and validation figures."""

    def state_dict(self) -> dict[str, Any]:
        """What must survive an interruption (and a rewind to the selected epoch)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


@dataclass
class FitResult:
    """What one run of ``fit`` did.

    ``train_seconds`` is the wall-clock time of the epochs (training and validation passes,
    callbacks included, summed over resumed sessions); ``callback_seconds`` is the part of it
    spent inside each callback's hooks, one entry per callback in the order given to ``fit``
    (so a run shared by several methods can charge each the callbacks it added);
    ``selected_epoch`` is the 0-based epoch whose weights the model holds now; ``history`` has
    one dict per epoch.
    """

    train_seconds: float
    epochs: int
    steps: int
    selected_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    callback_seconds: list[float] = field(default_factory=list)


class TimedCallbacks:
    """Calls one hook on every callback in order and adds the time each took to ``seconds``."""

    def __init__(self, callbacks: Sequence[Callback], seconds: list[float]) -> None:
        self.callbacks = callbacks
        self.seconds = seconds

    def __call__(self, hook: str, *args: Any) -> None:
        for index, callback in enumerate(self.callbacks):
            started = time.perf_counter()
            getattr(callback, hook)(*args)
            self.seconds[index] += time.perf_counter() - started
