"""Gaussian perturbation ensemble: the trained weights plus isotropic noise per tensor, N draws."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES
from tradi.methods.sampling import SamplingMethod, Scale, check_sampling_options
from tradi.plumbing.structure import named_parameters_with_owner
from tradi.posterior import DiagonalGaussian, WeightPosterior
from tradi.tracking import default_param_filter


@dataclass(frozen=True)
class GaussianPerturbationOptions:
    """``scale``: the noise standard deviation of each tensor as a factor of that tensor's root
    mean square weight (the knob's one meaning, `tradi.selection`); "auto" (default) chooses it
    on validation data. ``n_samples``: weight sets (20). ``bn_update``: re-estimate BatchNorm
    statistics per sample on the training data (off: the baseline is the trained network plus
    noise, nothing more). ``sample_modules``, ``bn_batches``: as in `TradiOptions`.
    """

    scale: Scale = "auto"
    n_samples: int = 20
    bn_update: bool = False
    sample_modules: tuple[str, ...] | None = None
    bn_batches: int | None = DEFAULT_BN_BATCHES

    def __post_init__(self) -> None:
        check_sampling_options(self.scale, self.n_samples, self.bn_batches, self.sample_modules)


def perturbed_weights(model: nn.Module) -> dict[str, Tensor]:
    """The weights the perturbation touches: the ones TRADI tracks (not normalisation layers)."""
    return {
        name: param.detach().clone()
        for name, module, param in named_parameters_with_owner(model)
        if default_param_filter(name, module, param)
    }


def rms_variance(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per tensor, its mean square weight broadcast to its shape: the reference variance."""
    return {n: torch.full_like(w, float(w.double().square().mean())) for n, w in weights.items()}


class GaussianPerturbation(SamplingMethod):
    """w~ = w* + scale * rms(w*) * m, m ~ N(0, I), per tensor of the trained network's
    tracked-kind weights (rms over that tensor; a zero tensor stays zero)."""

    name = "gaussian_perturbation"
    label = "Gauss. perturbation ensemble"
    short_label = "Gauss. pert."
    options_type = GaussianPerturbationOptions
    default_scale = None  # no natural untuned value: always fixed or chosen
    scale_range = (1e-4, 10.0)
    scale_reference = "each tensor's root mean square weight"

    def _posterior(self, scale: float) -> WeightPosterior:
        weights = perturbed_weights(self._require_model())
        return DiagonalGaussian(weights, rms_variance(weights), scale=scale)
