"""Uncertainty scores of an ensemble's per-sample probabilities, oriented for OOD detection.

Every score returned by `uncertainty_scores` is higher for inputs that look in-distribution, so
all of them plug into `ood_metrics` unchanged:

    mcp                     max_c p_c of the averaged prediction (the paper's score)
    neg_entropy             -H[p],  H[p] = -sum_c p_c log p_c (nats, 0 log 0 = 0)
    neg_mutual_information  -(H[p] - mean_s H[p_s]): minus the disagreement between samples
    neg_variance            -mean_c Var_s[p_{s,c}] (population variance over the S samples)

p = mean_s p_s is the averaged prediction. With a single sample (S = 1) the mutual information
and the variance are 0 everywhere: those scores need an ensemble.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tradi.metrics._checks import as_compute_float, check_probabilities


def _check_sample_probs(sample_probs: Tensor) -> Tensor:
    """[S, N, C] or [S, N, C, H, W]: samples first, classes at dim 2; half precision as float32."""
    return as_compute_float(check_probabilities(sample_probs, "sample_probs", class_dim=2))


def predictive_entropy(probs: Tensor, class_dim: int = 1) -> Tensor:
    """Entropy in nats of the class distribution along `class_dim`."""
    return -torch.special.xlogy(probs, probs).sum(dim=class_dim)


def _mutual_information(sample_probs: Tensor) -> Tensor:
    total = predictive_entropy(sample_probs.mean(dim=0))
    expected = predictive_entropy(sample_probs, class_dim=2).mean(dim=0)
    return (total - expected).clamp_min(0)


def _sampled_variance(sample_probs: Tensor) -> Tensor:
    return sample_probs.var(dim=0, correction=0).mean(dim=1)


def mutual_information(sample_probs: Tensor) -> Tensor:
    """H[mean_s p_s] - mean_s H[p_s] (epistemic part of the entropy), clamped at 0 against
    rounding; shape [N] or [N, H, W]."""
    return _mutual_information(_check_sample_probs(sample_probs))


def sampled_variance(sample_probs: Tensor) -> Tensor:
    """Variance of the sampled probabilities over samples, averaged over classes."""
    return _sampled_variance(_check_sample_probs(sample_probs))


def uncertainty_scores(sample_probs: Tensor) -> dict[str, Tensor]:
    """mcp, neg_entropy, neg_mutual_information, neg_variance; higher = more in-distribution."""
    sample_probs = _check_sample_probs(sample_probs)
    mean_probs = sample_probs.mean(dim=0)
    return {
        "mcp": mean_probs.max(dim=1).values,
        "neg_entropy": -predictive_entropy(mean_probs),
        "neg_mutual_information": -_mutual_information(sample_probs),
        "neg_variance": -_sampled_variance(sample_probs),
    }
