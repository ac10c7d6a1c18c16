"""IVON (Shen et al., ICML 2024, "Variational Learning is Effective for Large Deep Networks"):
the one-run peer a user would pick instead of TRADI today.

IVON is an optimizer that learns a diagonal Gaussian posterior N(m, 1 / (ess (h + delta))) over
every trainable weight at about Adam's cost: m are the network's weights, h a Hessian estimate,
delta the weight decay (prior precision) and ess the effective sample size (the training-set
size). Training evaluates each gradient at weights sampled from that posterior (the step runs
inside ``optimizer.sampled_params(train=True)``, the shared loop's ``step_context`` hook);
prediction averages the softmax over ``n_samples`` weight sets drawn from it, with the BatchNorm
statistics of training, as the authors' test scripts do (team-approx-bayes/ivon-experiments,
``bdl_indomain/test_von.py``: 64 samples, ``model.eval()``).

It needs the optional package ``ivon-opt`` (``pip install ivon-opt``, or from the clone
``pip install -e ".[ivon]"``: tradi is not on PyPI), imported only when an IVON network is
trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES
from tradi.methods.base import FitInfo
from tradi.methods.sampling import SamplingMethod, Scale, check_sampling_options
from tradi.posterior import DiagonalGaussian, WeightPosterior
from tradi.selection.fit import seeded_randomness
from tradi.training import Callback


@dataclass(frozen=True)
class IVONOptions:
    """IVON's hyper-parameters; the defaults are those of ``ivon.IVON`` (ivon-opt 0.1.3) and its
    README, the test-time sample count that of the authors' scripts.

    ``lr``: learning rate (README: 0.1; the authors' ResNet-20 CIFAR-10 run: 0.2), scheduled by
    the shared ``TrainConfig.scheduler``. ``ess``: effective sample size, None = the number of
    training samples (the authors' choice). ``hess_init``: initial Hessian h0 (the authors'
    CIFAR-10 run: 0.5); a smaller value means more noise early on. ``beta1``/``beta2``: momentum
    of the gradient and of the Hessian. ``weight_decay``: delta, the prior precision (it is part
    of the posterior, so it replaces ``TrainConfig.weight_decay``). ``clip_radius``: elementwise
    clipping of the update (None: none). ``n_samples``: weight sets averaged at test time.
    ``bn_update``: re-estimate BatchNorm statistics per sample (the authors do not).
    ``sample_modules``, ``bn_batches``: as in `TradiOptions`.
    ``scale``: a factor of IVON's posterior standard deviation (IVON's own: 1), or "auto"
    (`tradi.selection`).
    """

    lr: float = 0.1
    ess: float | None = None
    hess_init: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99999
    weight_decay: float = 1e-4
    clip_radius: float | None = None
    n_samples: int = 64
    bn_update: bool = False
    sample_modules: tuple[str, ...] | None = None
    bn_batches: int | None = DEFAULT_BN_BATCHES
    scale: Scale = 1.0

    def __post_init__(self) -> None:
        positive = {"lr": self.lr, "hess_init": self.hess_init, "ess": self.ess}
        for key, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be > 0, got {value}")
        for key, value in {"beta1": self.beta1, "beta2": self.beta2}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_radius is not None and not self.clip_radius > 0:
            raise ValueError(
                f"clip_radius must be > 0 (or None: no clipping), got {self.clip_radius}"
            )
        check_sampling_options(self.scale, self.n_samples, self.bn_batches, self.sample_modules)


def _ivon_class() -> type[torch.optim.Optimizer]:
    try:
        from ivon import IVON as Optimizer
    except ImportError as error:
        raise ImportError(
            "the ivon method needs the ivon-opt package: pip install ivon-opt (or, in the tradi "
            'clone, pip install -e ".[ivon]"; tradi is not on PyPI)'
        ) from error
    return Optimizer


class IVONCallback(Callback):
    """Runs each training step's forward and backward passes at weights sampled by IVON.

    Its state (IVON's Hessian estimate and step count, which ``optimizer.state_dict()`` lacks)
    follows the loop's checkpoints and its rewind to a selected epoch.
    """

    def __init__(self) -> None:
        self.optimizer: Any = None

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step_context(self) -> AbstractContextManager[object]:
        return self._require_optimizer().sampled_params(train=True)

    def hessian(self) -> list[Tensor]:
        """IVON's Hessian estimate h, one flat tensor per parameter group."""
        return [group["hess"] for group in self._require_optimizer().param_groups]

    def state_dict(self) -> dict[str, Any]:
        optimizer = self._require_optimizer()
        return {
            "hess": [h.detach().clone() for h in self.hessian()],
            "current_step": optimizer.current_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        optimizer = self._require_optimizer()
        for group, hess in zip(optimizer.param_groups, state["hess"], strict=True):
            group["hess"] = hess.to(group["hess"].device).clone()
        optimizer.current_step = int(state["current_step"])

    def _require_optimizer(self) -> Any:
        if self.optimizer is None:
            raise RuntimeError("IVONCallback used before on_train_start")
        return self.optimizer


class IVON(SamplingMethod):
    """A network trained by the IVON optimizer; predictions average ``n_samples`` weight sets
    drawn from its posterior N(m, 1 / (ess (h + delta))) over every trainable parameter.

    The shared epochs, batches, schedule and model selection apply; the shared optimizer,
    learning rate and weight decay are replaced by IVON's own (`IVONOptions`). The posterior's
    scale is IVON's own (1) unless the options say otherwise.
    """

    name = "ivon"
    label: ClassVar[str] = "IVON"
    short_label: ClassVar[str] = "IVON"
    options_type = IVONOptions
    default_scale = 1.0
    scale_range = (0.01, 100.0)
    scale_reference = "IVON's posterior standard deviation"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.variance: dict[str, Tensor] | None = None
        self._ess: float | None = None
        self._names: list[str] = []
        self._callback: IVONCallback | None = None

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._names = [n for n, _ in named]
        options = self.options
        self._ess = options.ess if options.ess is not None else self._training_set_size()
        return _ivon_class()(
            [p for _, p in named],
            lr=options.lr,
            ess=self._ess,
            hess_init=options.hess_init,
            beta1=options.beta1,
            beta2=options.beta2,
            weight_decay=options.weight_decay,
            clip_radius=math.inf if options.clip_radius is None else options.clip_radius,
        )

    def _training_set_size(self) -> float:
        """The samples of one (global) epoch of the training loader, counted without moving its
        shuffling or any random state."""
        loader = self.bn_loader  # the training loader's global batches (SamplingMethod.fit)
        if loader is None:
            raise RuntimeError("ivon: ess=None counts the training loader; call fit()")
        with seeded_randomness(self.train.seed, self.device, [loader]):
            return float(sum(len(batch[1]) for batch in loader))

    def _callbacks(self) -> Sequence[Callback]:
        self._callback = IVONCallback()
        return (self._callback,)

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        assert self._callback is not None and self._ess is not None
        (hess,) = self._callback.hessian()  # one parameter group
        variance = 1.0 / (self._ess * (hess + self.options.weight_decay))
        model = self._require_model()
        shapes = {n: p.shape for n, p in model.named_parameters()}
        sizes = [shapes[n].numel() for n in self._names]
        self.variance = {
            n: v.view(shapes[n]).detach().clone()
            for n, v in zip(self._names, variance.split(sizes), strict=True)
        }
        return super()._after_fit(info, train_loader, val_loader)

    def _posterior(self, scale: float) -> WeightPosterior:
        if self.variance is None:
            raise RuntimeError("ivon: call fit() or load_state_dict() first")
        params = dict(self._require_model().named_parameters())
        mean = {n: params[n].detach() for n in self.variance}
        return DiagonalGaussian(mean, self.variance, scale=scale)

    def state_dict(self) -> dict[str, Any]:
        if self.variance is None:
            raise RuntimeError("ivon: call fit() or load_state_dict() first")
        return {**super().state_dict(), "variance": self.variance}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.variance = dict(state["variance"])
