"""TRADI for any LightningModule: one callback tracks the weights during `trainer.fit` and gives
the sampled ensemble afterwards. Needs the `lightning` extra: `pip install -e ".[lightning]"` in
the tradi clone (tradi is not on PyPI), or `pip install lightning`.

    callback = TRADICallback(covariance="kernel", n_samples=20)
    trainer = lightning.Trainer(max_epochs=30, callbacks=[callback])
    trainer.fit(module, train_loader)
    probs = callback.ensemble(bn_loader=train_loader)(x)      # [N, C]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tradi.integrations.lightning needs Lightning: pip install lightning (or, in the tradi "
        'clone, pip install -e ".[lightning]"; tradi is not on PyPI)'
    ) from error

from tradi.inference.ensemble import Average, SampledEnsemble
from tradi.posterior import WeightPosterior
from tradi.tracking import WeightTracker

Covariance = Literal["diag", "kernel"]


class TRADICallback(pl.Callback):
    """Runs a `WeightTracker` on the LightningModule, updated once per optimizer step.

    The update happens at the end of a training batch whenever `trainer.global_step` advanced,
    i.e. once per real optimizer step: with `accumulate_grad_batches=k`, once every k batches.
    Tracking starts at epoch `start_epoch` (0-based). The tracker's state is saved in Lightning
    checkpoints and restored on resume. Under a multi-GPU strategy every rank holds the same
    tracker (see docs/distributed.md).

    Args:
        covariance: the posterior's covariance, "diag" or "kernel" (`WeightTracker.posterior`).
        n_samples: the ensemble's number of weight sets (`SampledEnsemble`).
        scale: the posterior's factor on the sampled deviation.
        rank: the kernel covariance's rank.
        average: the ensemble's average, "probs" or "logits".
        seed: the seed of the ensemble's weight draws.
        start_epoch: the first tracked epoch.
        tracker_options: keyword arguments for `WeightTracker` (step, config, init_mean,
            init_variance, param_filter); step="gradient" reads the first optimizer's rates.
    """

    def __init__(
        self,
        *,
        covariance: Covariance = "diag",
        n_samples: int = 20,
        scale: float = 1.0,
        rank: int = 10,
        average: Average = "probs",
        seed: int = 0,
        start_epoch: int = 0,
        tracker_options: Mapping[str, Any] | None = None,
    ) -> None:
        if covariance not in ("diag", "kernel"):
            raise ValueError(f"covariance must be 'diag' or 'kernel', got {covariance!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        self.covariance: Covariance = covariance
        self.n_samples = n_samples
        self.scale = scale
        self.rank = rank
        self.average: Average = average
        self.seed = seed
        self.start_epoch = start_epoch
        self.tracker_options = dict(tracker_options or {})
        self.tracker: WeightTracker | None = None
        self._module: pl.LightningModule | None = None
        self._last_step = 0
        self._pending_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._module = pl_module
        self._last_step = trainer.global_step
        if self._pending_state is not None:  # resuming: the state was read before this hook
            self.tracker = self._new_tracker(trainer, pl_module)
            self.tracker.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.start_epoch and self.tracker is None:
            self.tracker = self._new_tracker(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self._last_step:  # accumulating: no optimizer step yet
            return
        self._last_step = trainer.global_step
        if self.tracker is not None:
            self.tracker.update()

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": None if self.tracker is None else self.tracker.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict["tracker"]

    def _new_tracker(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> WeightTracker:
        options = dict(self.tracker_options)
        if options.get("step") == "gradient":
            options.setdefault("optimizer", trainer.optimizers[0])
        return WeightTracker(pl_module, **options)

    # ------------------------------------------------------------------ after fit
    def _require_tracker(self) -> WeightTracker:
        if self.tracker is None:
            raise RuntimeError(
                "TRADICallback has no tracker yet: call trainer.fit first (and train past "
                f"start_epoch={self.start_epoch})"
            )
        return self.tracker

    def posterior(
        self, covariance: Covariance | None = None, *, scale: float | None = None
    ) -> WeightPosterior:
        """The tracked Gaussian (defaults from the constructor)."""
        return self._require_tracker().posterior(
            covariance or self.covariance,
            rank=self.rank,
            scale=self.scale if scale is None else scale,
        )

    def ensemble(
        self,
        *,
        n_samples: int | None = None,
        covariance: Covariance | None = None,
        scale: float | None = None,
        bn_loader: Iterable[Any] | None = None,
        **ensemble_options: Any,
    ) -> SampledEnsemble:
        """The sampled ensemble of the trained module; `bn_loader` re-estimates BatchNorm
        statistics per sample (pass the training loader when the module has BatchNorm);
        `ensemble_options` (batching, chunk_size, cache, task, io) go to `SampledEnsemble`."""
        posterior = self.posterior(covariance, scale=scale)  # raises before fit
        assert self._module is not None  # set in on_fit_start, before any tracker exists
        return SampledEnsemble(
            self._module,
            posterior,
            n_samples or self.n_samples,
            average=self.average,
            seed=self.seed,
            bn_loader=bn_loader,
            **ensemble_options,
        )
