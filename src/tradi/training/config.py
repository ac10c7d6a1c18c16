"""Training settings shared by every method, and the one place that turns them into torch objects.

Options are frozen dataclasses so that a config file with a misspelt key fails loudly instead of
silently training with a default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from torch import nn

OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["step", "cosine", "none"]
Selection = Literal["last", "best_val_loss", "best_val_accuracy"]

OptionsT = TypeVar("OptionsT")


def check_literal_fields(options: Any) -> None:
    """Raise ValueError when a Literal-typed field of a dataclass holds a value outside its choices.

    Dataclasses do not check types; configs come from YAML, so a typo like ``"adm"`` must be caught.
    """
    hints = typing.get_type_hints(type(options))
    for field in dataclasses.fields(options):
        choices = _literal_choices(hints[field.name])
        value = getattr(options, field.name)
        if choices and value not in choices:
            raise ValueError(
                f"{type(options).__name__}.{field.name} must be one of {list(choices)}, got {value!r}"
            )


def options_from_mapping(cls: type[OptionsT], mapping: Mapping[str, Any] | None) -> OptionsT:
    """Build the options dataclass ``cls`` from a plain mapping (e.g. parsed YAML).

    Unknown keys raise a ValueError naming the valid ones; YAML lists become the tuples the
    dataclasses declare.
    """
    mapping = dict(mapping or {})
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; valid options: {names}")
    for key, value in mapping.items():
        if isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            mapping[key] = tuple(value)
    return cls(**mapping)


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return ()


@dataclass(frozen=True)
class TrainConfig:
    """How every method trains: the same optimizer, schedule, epochs and model selection.

    ``momentum`` is used by SGD only. ``step_size``/``gamma`` parametrise the step schedule
    (StepLR); the cosine schedule anneals to zero over ``epochs``. The scheduler steps once per
    epoch. ``select`` picks the epoch whose weights (and callback state) are kept: the last one,
    or the best on the validation split — never on test data.
    """

    epochs: int = 10
    optimizer: OptimizerName = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    scheduler: SchedulerName = "none"
    step_size: int = 10
    gamma: float = 0.1
    select: Selection = "last"
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        check_literal_fields(self)
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {self.step_size}")


def make_optimizer(
    params: Iterable[nn.Parameter] | nn.Module, config: TrainConfig
) -> torch.optim.Optimizer:
    """The optimizer named by ``config``; weight decay is plain L2 for sgd/adam, decoupled for adamw."""
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule named by ``config`` (None for a constant rate)."""
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_size, gamma=config.gamma
        )
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None
