"""The predictive Gaussian of a regression ensemble (law of total variance over the samples).

For S weight sets with per-sample means m_s and, from a Gaussian head, variances v_s:

    mean     = (1/S) sum_s m_s
    variance = (1/S) sum_s (m_s - mean)^2   (epistemic: spread of the sampled means)
             + (1/S) sum_s v_s              (aleatoric: the heads' own variance; 0 without one)

the mean and variance of the equal-weight mixture of N(m_s, v_s) (Lakshminarayanan et al. 2017,
eq. in section 2.4; Kendall & Gal 2017, eq. 9).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class GaussianPrediction(NamedTuple):
    """Predictive mean and total variance, each [N, ...] (the model's output shape)."""

    mean: Tensor
    variance: Tensor


def mixture_moments(means: Tensor, variances: Tensor | None = None) -> GaussianPrediction:
    """Mean and variance of the mixture of the samples' Gaussians.

    Args:
        means: [S, N, ...] per-sample predicted means.
        variances: [S, N, ...] per-sample predicted variances (>= 0), or None when the model
            predicts a mean only (the variance is then the epistemic part alone).

    Returns:
        `GaussianPrediction` of [N, ...] tensors; the variance divides by S, not S - 1 (the
        mixture's own variance, not an estimate of a population's).

    Raises:
        ValueError: `variances` does not have the shape of `means`.
    """
    if variances is not None and variances.shape != means.shape:
        raise ValueError(
            f"variances shape {tuple(variances.shape)} != means shape {tuple(means.shape)}"
        )
    epistemic = means.var(dim=0, unbiased=False)
    aleatoric = 0.0 if variances is None else variances.mean(dim=0)
    return GaussianPrediction(means.mean(dim=0), epistemic + aleatoric)
