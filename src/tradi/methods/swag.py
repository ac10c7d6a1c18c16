"""SWAG (Maddox et al., 2019) trained by the shared loop with a collection callback."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tradi.methods.base import FitInfo, SamplingMethod, check_sampling_options
from tradi.posterior import WeightPosterior
from tradi.posterior.swag import SWAGCollector
from tradi.training import Callback, SWAGCallback

COVARIANCE_SCALE_GRID: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class SWAGOptions:
    """SWAG's settings.

    ``rank``: K, deviation columns kept (20). ``start_epoch``: first 0-based epoch whose end
    weights are collected (None: ``epochs // 2``, i.e. the second half of training).
    ``covariance_scale``: multiplies the covariance of the samples (SWAG's 0.5); None chooses it
    on validation data from ``covariance_scale_grid``. ``n_samples``: weight sets (30).
    ``bn_update``: re-estimate BatchNorm statistics for every sample on the training data.
    SWAG uses the shared learning-rate schedule (no separate constant SWA rate).
    """

    rank: int = 20
    start_epoch: int | None = None
    covariance_scale: float | None = 0.5
    covariance_scale_grid: tuple[float, ...] = COVARIANCE_SCALE_GRID
    n_samples: int = 30
    bn_update: bool = True

    def __post_init__(self) -> None:
        check_sampling_options(
            "covariance_scale", self.covariance_scale, self.covariance_scale_grid, self.n_samples
        )
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.start_epoch is not None and self.start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {self.start_epoch}")


class SWAG(SamplingMethod):
    """SWA mean plus diagonal and rank-K deviations of the per-epoch iterates."""

    name = "swag"
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

    def _callbacks(self) -> Sequence[Callback]:
        self._callback = SWAGCallback(start_epoch=self.start_epoch, max_rank=self.options.rank)
        return (self._callback,)

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        assert self._callback is not None
        self.collector = self._callback.collector
        return super()._after_fit(info, train_loader, val_loader)

    def _scale_option(self) -> tuple[float | None, Sequence[float]]:
        return self.options.covariance_scale, self.options.covariance_scale_grid

    def _posterior(self, scale: float) -> WeightPosterior:
        if self.collector is None:
            raise RuntimeError("swag: call fit() or load_state_dict() first")
        return self.collector.posterior(covariance_scale=scale)

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
