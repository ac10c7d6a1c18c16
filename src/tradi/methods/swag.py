"""SWAG (Maddox et al., 2019) trained by the shared loop with a collection callback."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.swa_utils import SWALR

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES
from tradi.methods.base import FitInfo
from tradi.methods.sampling import SamplingMethod, Scale, check_sampling_options
from tradi.posterior import WeightPosterior
from tradi.posterior.swag import SWAGCollector
from tradi.training import Callback, SWAGCallback
from tradi.training.hooks import Scheduler

#: SWAG's covariance factor 0.5 (Maddox et al., 2019) as a factor of its standard deviation.
SWAG_SCALE = math.sqrt(0.5)


@dataclass(frozen=True)
class SWAGOptions:
    """SWAG's settings.

    ``rank``: K, deviation columns kept (20). ``start_epoch``: first 0-based epoch whose end
    weights are collected (None: ``epochs // 2``, i.e. the second half of training).
    ``scale``: multiplies SWAG's standard deviation, i.e. its covariance by scale² (SWAG's own
    covariance factor 0.5 is the default sqrt(0.5)); "auto" chooses it on validation data
    (`tradi.selection`). ``n_samples``: weight sets (30).
    ``bn_update``: re-estimate BatchNorm statistics for every sample on the training data.
    ``sample_modules``, ``bn_batches``: as in `TradiOptions`.
    ``swa_lr``: None keeps the shared learning-rate schedule throughout (the same budget as every
    other method); a value switches, from ``start_epoch`` on, to torch's `SWALR`, which anneals
    (cosine, over ``swa_anneal_epochs``; 1 = at once) to this constant rate, as SWAG does.
    """

    rank: int = 20
    start_epoch: int | None = None
    scale: Scale = SWAG_SCALE
    n_samples: int = 30
    bn_update: bool = True
    sample_modules: tuple[str, ...] | None = None
    bn_batches: int | None = DEFAULT_BN_BATCHES
    swa_lr: float | None = None
    swa_anneal_epochs: int = 1

    def __post_init__(self) -> None:
        check_sampling_options(self.scale, self.n_samples, self.bn_batches, self.sample_modules)
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.start_epoch is not None and self.start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {self.start_epoch}")
        if self.swa_lr is not None and self.swa_lr <= 0:
            raise ValueError(
                f"swa_lr must be > 0 (or None: the shared schedule), got {self.swa_lr}"
            )
        if self.swa_anneal_epochs < 1:
            raise ValueError(f"swa_anneal_epochs must be >= 1, got {self.swa_anneal_epochs}")


class SWALRFrom:
    """The shared schedule until epoch ``start_epoch`` (0-based), torch's `SWALR` from then on.

    The loop steps the schedule at the end of each epoch, so SWALR's first step comes at the
    end of epoch ``start_epoch - 1``: epoch ``start_epoch`` already trains at the SWA rate (with
    one anneal epoch). SWALR is built up front, as torch documents; its construction leaves the
    learning rate as it is.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base: Scheduler | None,
        *,
        start_epoch: int,
        swa_lr: float,
        anneal_epochs: int,
    ) -> None:
        if start_epoch < 1:
            raise ValueError(
                "an SWA learning rate needs start_epoch >= 1 (one epoch at the base rate)"
            )
        self.base = base
        self.swalr = SWALR(optimizer, swa_lr=swa_lr, anneal_epochs=anneal_epochs)
        self.start_epoch = start_epoch
        self.epochs_done = 0

    def step(self) -> None:
        if self.epochs_done + 1 >= self.start_epoch:
            self.swalr.step()
        elif self.base is not None:
            self.base.step()
        self.epochs_done += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.state_dict() if self.base is not None else None,
            "swalr": self.swalr.state_dict(),
            "epochs_done": self.epochs_done,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.base is not None:
            self.base.load_state_dict(state_dict["base"])
        self.swalr.load_state_dict(state_dict["swalr"])
        self.epochs_done = int(state_dict["epochs_done"])


class SWAG(SamplingMethod):
    """SWA mean plus diagonal and rank-K deviations of the per-epoch iterates."""

    name = "swag"
    label = "SWAG"
    short_label = "SWAG"
    default_scale = SWAG_SCALE
    scale_range = (0.01, 100.0)
    scale_reference = "SWAG's standard deviation (covariance x scale^2)"
    options_type = SWAGOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collector: SWAGCollector | None = None
        self._callback: SWAGCallback | None = None

    @property
    def start_epoch(self) -> int:
        start = self.options.start_epoch
        return self.train.epochs // 2 if start is None else start

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        super()._check_fit(val_loader)
        if self.start_epoch >= self.train.epochs:
            raise ValueError(
                f"swag start_epoch {self.start_epoch} is not before the end of training "
                f"({self.train.epochs} epochs): nothing would be collected"
            )

    def shares_training(self) -> bool:
        """Only without an SWA learning rate: SWALR changes the run itself, not just callbacks."""
        return self.options.swa_lr is None

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Scheduler | None:
        base = super()._scheduler(optimizer)
        if self.options.swa_lr is None:
            return base
        return SWALRFrom(
            optimizer,
            base,
            start_epoch=self.start_epoch,
            swa_lr=self.options.swa_lr,
            anneal_epochs=self.options.swa_anneal_epochs,
        )

    def _callbacks(self) -> Sequence[Callback]:
        self._callback = SWAGCallback(start_epoch=self.start_epoch, max_rank=self.options.rank)
        return (self._callback,)

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        assert self._callback is not None
        self.collector = self._callback.collector
        return super()._after_fit(info, train_loader, val_loader)

    def _posterior(self, scale: float) -> WeightPosterior:
        if self.collector is None:
            raise RuntimeError("swag: call fit() or load_state_dict() first")
        return self.collector.posterior(covariance_scale=scale**2)

    def state_dict(self) -> dict[str, Any]:
        if self.collector is None:
            raise RuntimeError("swag: call fit() or load_state_dict() first")
        return {
            **super().state_dict(),
            "collector": self.collector.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        collector = SWAGCollector(self._require_model(), max_rank=self.options.rank)
        collector.load_state_dict(state["collector"])
        self.collector = collector
