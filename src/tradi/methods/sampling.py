"""The methods that predict by sampling weight sets from a posterior (SWAG, Gaussian
perturbation, TRADI, IVON): one `SampledEnsemble` built by `tradi.fit_ensemble`, its noise
scale fixed or chosen on validation data (`tradi.selection`), and their options' shared checks.
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from tradi.distributed import global_batches
from tradi.inference.ensemble import SampledEnsemble
from tradi.inference.trunk import sampled_parameter_names
from tradi.methods.base import FitInfo, Method
from tradi.plumbing.structure import unwrap
from tradi.posterior import WeightPosterior
from tradi.selection.fit import fit_ensemble
from tradi.selection.rules import ScaleSearch, ScaleSelection, scale_search_from_dict
from tradi.training import Callback, FitResult

#: A sampling method's knob: a factor of its posterior's standard deviation, or "auto".
Scale = float | Literal["auto"]


class SamplingMethod(Method):
    """A method that predicts by sampling weight sets from a posterior (SWAG, Gaussian, TRADI).

    Subclasses give ``_posterior(scale)`` and declare their knob: ``options.scale`` multiplies
    the posterior's standard deviation (`tradi.selection`); ``scale_reference`` says what that
    deviation is, ``default_scale`` is the untuned value (None: the method has none) and
    ``scale_range`` the range searched for ``scale="auto"``. Prediction goes through one
    `SampledEnsemble` built by `tradi.fit_ensemble`, with BatchNorm statistics re-estimated per
    sample on the training loader when the options say ``bn_update``. ``noise_scale`` is the
    scale the method predicts with, after every path (fixed, chosen in ``fit``, chosen by
    ``select_scale``, restored by ``load_state_dict``); ``scale_search`` the last search record.
    ``selection`` is the rule ``fit`` applies to ``scale="auto"``.
    """

    default_scale: ClassVar[float | None]
    scale_range: ClassVar[tuple[float, float]]
    scale_reference: ClassVar[str]

    def __init__(self, *args: Any, selection: ScaleSelection | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.selection = selection or ScaleSelection()
        self.noise_scale: float | None = None
        self.scale_search: ScaleSearch | None = None
        self.bn_loader: Iterable[Any] | None = None
        # the last ensemble built and its scale (memory: one ensemble); rebuilt for another scale
        self._ensemble: tuple[float, SampledEnsemble] | None = None

    @property
    def scale_in_use(self) -> float | None:
        return self.noise_scale

    @abstractmethod
    def _posterior(self, scale: float) -> WeightPosterior:
        """The weight posterior at noise scale ``scale``."""

    def train_network(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None,
    ) -> tuple[nn.Module, FitResult]:
        self._use_training_loader(train_loader)  # known before training (IVON counts it)
        return super().train_network(train_loader, val_loader, callbacks, checkpoint_dir)

    def _use_training_loader(self, train_loader: Iterable[Any]) -> None:
        """Keep the training loader for BatchNorm re-estimation: its whole global batches on
        every rank of a distributed run, so sampled weight sets get single-process statistics."""
        self.bn_loader = global_batches(train_loader)
        self._ensemble, self.scale_search = None, None

    @property
    def forward_passes_per_input(self) -> int:
        return int(self.options.n_samples)

    def _ensemble_settings(self) -> dict[str, Any]:
        """What every ensemble of this method shares (`fit_ensemble`'s keywords)."""
        if self.options.bn_update and self.bn_loader is None:
            raise RuntimeError(
                f"{self.name}: bn_update needs the training loader; set method.bn_loader "
                "after load_state_dict()"
            )
        return {
            "n_samples": self.options.n_samples,
            "bn_loader": self.bn_loader if self.options.bn_update else None,
            "seed": self.train.seed,
            "io": self.io,
            "sample_modules": self.options.sample_modules,
            "bn_batches": self.options.bn_batches,
        }

    def ensemble(self, scale: float | None = None) -> SampledEnsemble:
        """The sampled ensemble at ``scale`` (default: the current ``noise_scale``).

        A deterministic function of the trained state, ``scale`` and ``TrainConfig.seed``; the
        last one built (or the one a scale search chose) is kept and returned again for the
        same scale.
        """
        scale = self.noise_scale if scale is None else scale
        if scale is None:
            raise RuntimeError(f"{self.name}: call fit() or load_state_dict() first")
        if self._ensemble is not None and self._ensemble[0] == scale:
            return self._ensemble[1]
        self._ensemble = None  # release the previous ensemble before building the next
        model = self._require_model()
        # after a search, in its context too (e.g. the untuned row of a table beside the chosen)
        with self._searching() if self.scale_search is not None else nullcontext():
            settings = self._ensemble_settings()
            ensemble = fit_ensemble(model, self._posterior, scale=scale, **settings)[0]
        self._ensemble = (scale, ensemble)
        return ensemble

    def sample_logits(self, x: Any) -> Tensor:
        """Every weight set's logits [n_samples, N, C, ...] (`SampledEnsemble.sample_logits`)."""
        return self.ensemble().sample_logits(x)

    def sample_probs(self, x: Any) -> Tensor:
        return self.ensemble().sample_probs(x)

    def select_scale(
        self,
        val_loader: Iterable[Any],
        selection: ScaleSelection | None = None,
        *,
        ood_val_loader: Iterable[Any] | None = None,
    ) -> ScaleSearch:
        """Choose ``noise_scale`` on validation data by ``selection`` (default: the method's
        ``selection``) over ``scale_range``, and predict with that scale's ensemble from now on.

        ``ood_val_loader`` is read by rule "ood_auroc" only. Raises ValueError as
        `tradi.selection.search_scale` does.
        """
        with self._searching():
            ensemble, search = fit_ensemble(
                self._require_model(),
                self._posterior,
                val_loader,
                selection=selection or self.selection,
                scale_range=self.scale_range,
                start=self._search_start(),
                ood_val_loader=ood_val_loader,
                ignore_index=getattr(self.loss_fn, "ignore_index", None),
                **self._ensemble_settings(),
            )
        assert search is not None
        self.noise_scale, self.scale_search = search.scale, search
        self._ensemble = (search.scale, ensemble)
        return search

    def _searching(self) -> AbstractContextManager[None]:
        """The context a scale search runs in, and every ensemble built after one: none here;
        TRADI's silences the tracker's warning that the search itself answers."""
        return nullcontext()

    def _search_start(self) -> float:
        """The untuned scale, else the middle of the range in log scale."""
        if self.default_scale is not None:
            return self.default_scale
        return math.sqrt(self.scale_range[0] * self.scale_range[1])

    def state_dict(self) -> dict[str, Any]:
        search = None if self.scale_search is None else dataclasses.asdict(self.scale_search)
        return {**super().state_dict(), "noise_scale": self.noise_scale, "scale_search": search}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the network, noise scale and search record; set ``bn_loader`` again if
        ``bn_update``."""
        super().load_state_dict(state)
        self.noise_scale = state["noise_scale"]
        search = state.get("scale_search")
        self.scale_search = None if search is None else scale_search_from_dict(search)
        self._ensemble = None

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        super()._check_fit(val_loader)
        if self.options.sample_modules is not None:  # unknown names fail before training
            sampled_parameter_names(unwrap(self.model_factory()), self.options.sample_modules)
        if self.options.scale == "auto" and val_loader is None:
            raise ValueError(
                f"{self.name}: scale='auto' is chosen on validation data but fit() got no "
                "val_loader; pass one or set a fixed scale"
            )

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        """Fix the noise scale from the options, or choose it on validation data ("auto")."""
        self._use_training_loader(train_loader)
        if self.options.scale != "auto":
            self.noise_scale = float(self.options.scale)
            return info
        assert val_loader is not None  # checked before training by _check_fit
        info.scale_search = self.select_scale(val_loader)
        info.selection_seconds = info.scale_search.seconds
        return info


def check_sampling_options(
    scale: Scale,
    n_samples: int,
    bn_batches: int | None = None,
    sample_modules: Sequence[str] | None = None,
) -> None:
    """Shared checks of the sampling methods' options (noise scale, ensemble size, and
    `check_ensemble_options`)."""
    check_ensemble_options(bn_batches, sample_modules)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if scale != "auto" and (isinstance(scale, str) or scale < 0):
        raise ValueError(
            f"scale must be a number >= 0 (a factor of the posterior's standard deviation) "
            f"or 'auto' (chosen on validation data), got {scale!r}"
        )


def check_ensemble_options(bn_batches: int | None, sample_modules: Sequence[str] | None) -> None:
    """Checks of the options every `SamplingMethod` passes to its `SampledEnsemble`: BatchNorm
    batches and sampled modules (their names are checked against the network before training)."""
    if bn_batches is not None and bn_batches < 1:
        raise ValueError(f"bn_batches must be >= 1 (or None: the whole loader), got {bn_batches}")
    if sample_modules is not None and not sample_modules:
        raise ValueError("sample_modules must name at least one module (or be None: all)")
