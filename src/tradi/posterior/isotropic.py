"""The Gaussian perturbation ensemble's posterior: trained weights plus isotropic noise."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from tradi.posterior.state import StatefulPosterior


class IsotropicGaussian(StatefulPosterior):
    """w~ = w* + sigma * m, m ~ N(0, I), for every tensor in `weights`.

    Args:
        weights: the trained weights to perturb {parameter name: tensor}; the keys ARE the choice
            of perturbed parameters (the methods pass every trainable parameter except
            normalisation layers' affine ones, as TRADI tracks them). Copied at construction.
        sigma: the noise standard deviation, the same for every weight (0 gives w* itself).
    """

    kind = "isotropic"
    state_fields = ("weights", "sigma")

    def __init__(self, weights: Mapping[str, Tensor], sigma: float) -> None:
        if not weights:
            raise ValueError("IsotropicGaussian needs at least one weight tensor to perturb")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.weights = {n: w.detach().clone() for n, w in weights.items()}
        self.sigma = sigma

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {
            n: w.add(
                torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype),
                alpha=self.sigma,
            )
            for n, w in self.weights.items()
        }
