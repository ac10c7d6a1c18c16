"""TRADI modes (beyond the paper, issue 19): the seed's tracked training, then short tracked
cosine cycles from its weights; every cycle end and the trained network is a mode, each predicts
with the last-layer linearized predictive of its tracked Gaussian, and the modes are averaged.

Training is the seed's ordinary run with TRADI's tracker riding along (so the runner trains it
once for every method that `shares_training`); the after-fit step is `tradi.training.exploration`,
which adds ``cycles * epochs_per_cycle`` epochs and chooses ONE scale for the pooled mixture on
validation data (rule ``min_nll``, declared before the study: benchmarks/study_linearized.py).
The paper samples one Gaussian around one trained network (`tradi.methods.tradi`); several modes
with a Gaussian each are MultiSWAG's idea (Wilson & Izmailov 2020) from one run, with FGE /
snapshot-ensemble cycles (Garipov et al. 2018; Huang et al. 2017) and the linearized predictive
(Immer et al. 2021). TRADI.md section 5b gives the sources, section 5c the feasibility figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tradi.distributed import world_size
from tradi.inference.linearized import Link
from tradi.inference.mixture import MixturePredictive
from tradi.methods.base import FitInfo, Method
from tradi.methods.sampling import Scale, check_sampling_options
from tradi.methods.tradi import TradiOptions
from tradi.selection.rules import ScaleSearch
from tradi.tracking import WeightTracker
from tradi.training import Callback, TrackingCallback, check_literal_fields, make_optimizer
from tradi.training.exploration import Exploration, explore

#: The shared run's tracker is TRADI's default one (the same filters as the ``tradi`` row).
_TRACKING = TradiOptions()


@dataclass(frozen=True)
class TradiModesOptions:
    """TRADI modes' settings (`tradi.training.exploration`'s arguments).

    ``cycles`` (>= 1) cosine cycles of ``epochs_per_cycle`` (>= 1) epochs after training, each a
    mode; the trained network is one more, so the mixture has ``cycles + 1`` members. ``lr``:
    the cycles' peak learning rate (> 0; None: the config's ``train.lr``), with the config's
    optimizer (`make_optimizer`: its momentum too); ``weight_decay`` (>= 0; None: the
    config's ``train.weight_decay``) replaces its weight decay in the cycles only (the study
    behind explore's defaults ran its cycles with Adam and none). ``link``: "probit" (closed
    form, last layer), "probit_shared" (the same with one variance per input, keeping each mode's
    arg-max) or "mc" (``n_samples`` logit draws per mode). ``scale``: a fixed factor of
    the tracked standard deviations, or "auto": chosen on validation data by explore's rule
    (``min_nll``), once for the pooled mixture. Raises ValueError for a value out of range.
    """

    cycles: int = 2
    epochs_per_cycle: int = 3
    lr: float | None = None
    weight_decay: float | None = None
    n_samples: int = 20
    link: Link = "probit"
    scale: Scale = "auto"

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_sampling_options(self.scale, self.n_samples)
        if self.cycles < 1:
            raise ValueError(f"cycles must be >= 1 (each cycle adds a mode), got {self.cycles}")
        if self.epochs_per_cycle < 1:
            raise ValueError(f"epochs_per_cycle must be >= 1, got {self.epochs_per_cycle}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0 (or None: the config's train.lr), got {self.lr!r}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(
                f"weight_decay must be >= 0 (or None: the config's train.weight_decay), got "
                f"{self.weight_decay!r}"
            )


class TradiModes(Method):
    """The seed's tracked run, ``cycles`` tracked cycles after it, and the mixture of the modes'
    linearized predictives (`tradi.training.exploration`). Probabilities only: ``sample_probs``
    gives each mode's predictive [K, N, C, ...], K = ``cycles + 1``; there are no logits (a
    mode's probit predictive is no softmax of logits)."""

    name = "tradi_modes"
    label = "TRADI modes (beyond the paper)"
    short_label = "TRADI modes"
    options_type = TradiModesOptions
    #: How report.md's scale-selection section names what the chosen scale multiplies.
    scale_reference: ClassVar[str] = (
        "every mode's tracked standard deviation; the reference NLL is the modes' mixture "
        "at scale 0"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._callback: TrackingCallback | None = None
        self.modes: list[nn.Module] = []
        self.trackers: list[WeightTracker] = []
        self.mixture: MixturePredictive | None = None
        self.mixture_scale: float | None = None
        self.last_layer: str | None = None
        self.scale_search: ScaleSearch | None = None
        self.exploration: Exploration | None = None

    @property
    def scale_in_use(self) -> float | None:
        return self.mixture_scale

    # ------------------------------------------------------------------ training

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        super()._check_fit(val_loader)
        if self.options.scale == "auto" and val_loader is None:
            raise ValueError(
                "tradi_modes: scale='auto' is chosen on validation data but fit() got no "
                "val_loader; pass one or set a fixed scale"
            )
        if world_size() > 1:
            # explore's cycles train one process's network on its loader: under DDP each rank
            # would train on its shard alone and the ranks' modes would differ
            raise ValueError(
                "tradi_modes runs its cycles in one process: run it without --nproc/torchrun"
            )

    def _new_tracker(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> WeightTracker:
        return WeightTracker(
            model,
            step=_TRACKING.step,
            optimizer=optimizer,
            config=_TRACKING.kalman(),
            init_mean=_TRACKING.init_mean,
            init_variance=_TRACKING.init_variance,
        )

    def _callbacks(self) -> Sequence[Callback]:
        self._callback = TrackingCallback(self._new_tracker)
        return (self._callback,)

    def _cycle_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The config's optimizer over ``params``, at ``options.lr`` (the peak) and with
        ``options.weight_decay`` when set."""
        changes = {"lr": self.options.lr, "weight_decay": self.options.weight_decay}
        config = dataclasses.replace(
            self.train, **{key: value for key, value in changes.items() if value is not None}
        )
        return make_optimizer(params, config)

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        """The cycles and the mixture's scale (`explore`); their runs join ``info.runs`` and
        their time ``info.train_seconds``, the search's time ``info.selection_seconds``."""
        assert self._callback is not None and self._callback.tracker is not None
        exploration = explore(
            self._require_model(),
            train_loader,
            val_loader,
            optimizer=self._cycle_optimizer,
            cycles=self.options.cycles,
            epochs_per_cycle=self.options.epochs_per_cycle,
            tracker=self._callback.tracker,
            link=self.options.link,
            n_samples=self.options.n_samples,
            scale=self.options.scale,
            loss_fn=self.loss_fn,
            ignore_index=getattr(self.loss_fn, "ignore_index", None),
            seed=self.train.seed,
            io=self.io,
        )
        self._keep(exploration)
        info.runs.extend(exploration.runs)
        info.train_seconds += sum(run.train_seconds for run in exploration.runs)
        if exploration.search is not None:
            info.scale_search = exploration.search
            info.selection_seconds = exploration.search.seconds
        return info

    def _keep(self, exploration: Exploration) -> None:
        self.exploration = exploration
        self.modes, self.trackers = exploration.modes, exploration.trackers
        self.last_layer = exploration.last_layer
        self.mixture, self.scale_search = exploration.predictive, exploration.search
        self.mixture_scale = exploration.scale

    # ------------------------------------------------------------------ prediction
    @property
    def forward_passes_per_input(self) -> int:
        """One network evaluation per mode (the probit's variance is one more call of the last
        layer alone; ``link="mc"`` draws through the last layer alone too)."""
        return self.options.cycles + 1

    def sample_probs(self, x: Any) -> Tensor:
        """Each mode's predictive probabilities, [cycles + 1, N, C, ...] (float), the trained
        network's first (`MixturePredictive.member_probs`); their mean is the mixture."""
        if self.mixture is None:
            raise RuntimeError("tradi_modes: call fit() or load_state_dict() first")
        return self.mixture.member_probs(x)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The trained network (``Method.state_dict``) and the saved `Exploration` (its modes,
        trackers, scale and search record: `Exploration.state_dict`): enough to predict again
        without training."""
        if self.exploration is None:
            raise RuntimeError("tradi_modes: call fit() or load_state_dict() first")
        return {**super().state_dict(), "exploration": self.exploration.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the mixture from ``state_dict()``'s output: the same predictions, bit for bit.

        Raises:
            ValueError: a state saved before the modes were saved as an `Exploration` (fit
                again), one saved with another link, ``n_samples`` or number of cycles than
                these options, or as `Exploration.from_state_dict` raises.
        """
        if "exploration" not in state:
            raise ValueError(
                "tradi_modes: this state has no 'exploration': it was saved by an older tradi "
                "(cycle_models and trackers apart), which this one does not read; fit again"
            )
        saved_exploration = state["exploration"]
        saved = (
            saved_exploration.get("link"),
            saved_exploration.get("n_samples"),
            len(saved_exploration.get("modes", ())) - 1,
        )
        options = (self.options.link, self.options.n_samples, self.options.cycles)
        if saved != options:  # checked before anything of this method changes
            raise ValueError(
                f"tradi_modes: the state was saved with (link, n_samples, cycles) = {saved}, "
                f"these options say {options}: build the method with the saved options"
            )
        super().load_state_dict(state)
        self._keep(
            Exploration.from_state_dict(saved_exploration, self._require_model(), io=self.io)
        )
