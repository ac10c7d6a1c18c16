"""TRADI: the shared loop with the Kalman weight tracker switched on, then a sampled ensemble."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES
from tradi.methods.base import FitInfo
from tradi.methods.sampling import SamplingMethod, Scale, check_sampling_options
from tradi.posterior import WeightPosterior
from tradi.tracking import KalmanConfig, WeightTracker
from tradi.tracking.start import scale_chosen_on_validation
from tradi.training import Callback, TrackingCallback, check_literal_fields, make_optimizer

_KALMAN = KalmanConfig()


@dataclass(frozen=True)
class TradiOptions:
    """TRADI's settings (TRADI.md sections 2-3).

    ``covariance``: "kernel" (the paper's low-rank covariance, rank ``rank``, one phase per
    feature; ``phase="weight"`` is the public code's variant) or "diag". ``scale`` multiplies the
    tracked standard deviation; "auto" (default) chooses it on validation data by the method's
    `ScaleSelection` rule (`tradi.selection`; 1 is the untuned value). ``n_samples`` weight sets
    (20); ``bn_update`` re-estimates BatchNorm statistics per sample on the training data, on its
    first ``bn_batches`` batches (30 by default, docs/inference.md; None: all).
    ``sample_modules`` samples only those modules' parameters (e.g. ``("classifier",)``, the
    last layer; None: all), the trunk before them evaluated once per input (`tradi.inference.trunk`).
    ``step``, ``init_mean``, ``init_variance`` and the Kalman constants configure the
    `WeightTracker`; tracking starts at the 0-based epoch ``start_epoch``.

    The initial state is `WeightTracker`'s default, not the public code's (``init_mean="zero"``,
    ``init_variance="public_code"``, i.e. sqrt(2 / fan_out)), because with gains of ~3e-3 the start takes
    a few thousand steps to fade: a zero mean leaves mu near w(t) - w(0), and the He-like
    variance (std ~0.1 for a 200-wide layer, larger than the weights) still dominates after
    two MNIST epochs (measured: 10% test accuracy at scale 1). Starting from mu(0) = w(0) and
    sigma2(0) = 0 gives the same filters once the start has faded (the paper's 30 MNIST epochs
    are ~12,700 steps) and sensible ones before. Both public-code values remain options.
    """

    covariance: Literal["diag", "kernel"] = "kernel"
    rank: int = 10
    phase: Literal["feature", "weight"] = "feature"
    scale: Scale = "auto"
    n_samples: int = 20
    bn_update: bool = True
    sample_modules: tuple[str, ...] | None = None
    bn_batches: int | None = DEFAULT_BN_BATCHES
    step: Literal["delta", "gradient"] = "delta"
    init_mean: Literal["zero", "weights"] = "weights"
    init_variance: float | Literal["public_code"] = 0.0
    start_epoch: int = 0
    q_mean: float = _KALMAN.q_mean
    r_mean: float = _KALMAN.r_mean
    q_var: float = _KALMAN.q_var
    r_var: float = _KALMAN.r_var

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_sampling_options(self.scale, self.n_samples, self.bn_batches, self.sample_modules)
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {self.start_epoch}")
        if self.init_variance != "public_code" and (
            isinstance(self.init_variance, str) or self.init_variance < 0
        ):
            raise ValueError(
                f"init_variance must be >= 0 or 'public_code', got {self.init_variance!r}"
            )
        self.kalman()  # validates the constants

    def kalman(self) -> KalmanConfig:
        return KalmanConfig(
            q_mean=self.q_mean, r_mean=self.r_mean, q_var=self.q_var, r_var=self.r_var
        )


class TRADI(SamplingMethod):
    """One ordinary training run with weight tracking; predictions from sampled weight sets."""

    name = "tradi"
    label = "TRADI"
    short_label = "TRADI"
    default_scale = 1.0
    # At the end of a StepLR schedule the tracked sigma is tiny next to the weights (TRADI.md
    # 4c: ~3e-5 vs |w| ~1e-2): the range reaches three decades above the untuned 1.
    scale_range = (0.01, 1000.0)
    scale_reference = "the tracked standard deviation"
    options_type = TradiOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker: WeightTracker | None = None
        self._callback: TrackingCallback | None = None

    def _new_tracker(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> WeightTracker:
        return WeightTracker(
            model,
            step=self.options.step,
            optimizer=optimizer,
            config=self.options.kalman(),
            init_mean=self.options.init_mean,
            init_variance=self.options.init_variance,
        )

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        super()._check_fit(val_loader)
        if self.options.start_epoch >= self.train.epochs:
            raise ValueError(
                f"tradi start_epoch {self.options.start_epoch} is not before the end of "
                f"training ({self.train.epochs} epochs): nothing would be tracked"
            )

    def _callbacks(self) -> Sequence[Callback]:
        self._callback = TrackingCallback(self._new_tracker, start_epoch=self.options.start_epoch)
        return (self._callback,)

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        assert self._callback is not None
        if self._callback.tracker is None:
            raise RuntimeError(
                "tradi: the selected epoch precedes start_epoch, so it has no tracked state; "
                "lower start_epoch or select a later epoch"
            )
        self.tracker = self._callback.tracker
        return super()._after_fit(info, train_loader, val_loader)

    def _posterior(self, scale: float) -> WeightPosterior:
        if self.tracker is None:
            raise RuntimeError("tradi: call fit() or load_state_dict() first")
        return self.tracker.posterior(
            self.options.covariance, rank=self.options.rank, scale=scale, phase=self.options.phase
        )

    def _searching(self) -> AbstractContextManager[None]:
        """Without the tracker's warning that its memory has not filled yet: the search is that
        warning's remedy (`scale_chosen_on_validation`)."""
        return scale_chosen_on_validation()

    def state_dict(self) -> dict[str, Any]:
        if self.tracker is None:
            raise RuntimeError("tradi: call fit() or load_state_dict() first")
        return {**super().state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        model = self._require_model()
        tracker = self._new_tracker(model, make_optimizer(model, self.train))
        tracker.load_state_dict(state["tracker"])
        self.tracker = tracker
