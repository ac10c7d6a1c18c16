"""The uncertainty quantities behind the OOD scores, on an ensemble's per-sample predictions.

Inputs are samples first, classes at dim 2: probabilities or logits [S, N, C] (classification)
or [S, N, C, H, W] (segmentation, per pixel). Each function returns the quantity itself
(uncertainty, higher = less certain) in nats where it is an entropy; the named, oriented OOD
scores built on them (higher = more in-distribution) are in `tradi.metrics.ood_scores`.

p_s is sample s's class distribution, p = mean_s p_s the averaged prediction (the predictive,
TRADI eq. 6). With a single sample (S = 1) the mutual information, the variance and the variation
ratio are 0 everywhere: they measure disagreement between samples and need an ensemble.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tradi.metrics._checks import as_compute_float, check_probabilities


def check_sample_probs(sample_probs: Tensor, name: str = "sample_probs") -> Tensor:
    """[S, N, C] or [S, N, C, H, W] probabilities, samples first, classes at dim 2; float16 /
    bfloat16 come back as float32 (sums and logarithms need it), other dtypes unchanged.

    Raises TypeError / ValueError as `tradi.metrics._checks.check_probabilities` (``name`` in
    the message)."""
    return as_compute_float(check_probabilities(sample_probs, name, class_dim=2))


def check_sample_logits(sample_logits: Tensor, name: str = "sample_logits") -> Tensor:
    """[S, N, C] or [S, N, C, H, W] logits, samples first, classes at dim 2; float16 / bfloat16
    come back as float32, other float dtypes unchanged.

    Raises TypeError for a non-tensor or non-float input, ValueError for fewer than 3 dims, no
    class, or a NaN / infinite logit (an overflow upstream: compute the logits in float32)."""
    if not isinstance(sample_logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(sample_logits).__name__}")
    if not sample_logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {sample_logits.dtype}")
    if sample_logits.ndim < 3 or sample_logits.shape[2] < 1:
        raise ValueError(
            f"{name} must be [S, N, C] or [S, N, C, H, W] (samples first, classes at dim 2), "
            f"got shape {tuple(sample_logits.shape)}; a single network's [N, C] logits are "
            f"{name}.unsqueeze(0)"
        )
    wide = as_compute_float(sample_logits)
    if wide.numel() and not bool(torch.isfinite(wide).all()):
        raise ValueError(
            f"{name} contains NaN or infinite values; compute the logits in float32 (float16 "
            "overflows above 65504)"
        )
    return wide


def predictive_entropy(probs: Tensor, class_dim: int = 1) -> Tensor:
    """Entropy in nats of the class distribution along `class_dim` (0 log 0 = 0), e.g. probs
    [N, C] -> [N]. No input check: the caller's probabilities are taken as they are."""
    return -torch.special.xlogy(probs, probs).sum(dim=class_dim)


def _mutual_information(sample_probs: Tensor) -> Tensor:
    total = predictive_entropy(sample_probs.mean(dim=0))
    expected = predictive_entropy(sample_probs, class_dim=2).mean(dim=0)
    return (total - expected).clamp_min(0)


def _sampled_variance(sample_probs: Tensor) -> Tensor:
    return sample_probs.var(dim=0, correction=0).mean(dim=1)


def _variation_ratio(votes: Tensor, dtype: torch.dtype) -> Tensor:
    """1 - (count of the modal vote) / S from the votes [S, N, *] (class indices), in `dtype`."""
    # any mode has the same count, so the tie rule of torch.mode does not matter
    modal = votes.mode(dim=0).values
    count = (votes == modal.unsqueeze(0)).sum(dim=0)
    return 1 - count.to(dtype) / votes.shape[0]


def mutual_information(sample_probs: Tensor) -> Tensor:
    """H[mean_s p_s] - mean_s H[p_s] in nats (the epistemic part of the predictive entropy;
    Depeweg et al. 2018, Malinin & Gales 2018), clamped at 0 against rounding.

    sample_probs [S, N, C] or [S, N, C, H, W] -> [N] or [N, H, W]; float32 for half input,
    else the input's dtype. Raises as `check_sample_probs`."""
    return _mutual_information(check_sample_probs(sample_probs))


def sampled_variance(sample_probs: Tensor) -> Tensor:
    """mean_c Var_s[p_{s,c}]: the population variance over the S samples of each class
    probability, averaged over classes. [S, N, C, *] -> [N, *]. Raises as `check_sample_probs`."""
    return _sampled_variance(check_sample_probs(sample_probs))


def variation_ratio(sample_probs: Tensor) -> Tensor:
    """1 - (number of samples voting for the modal class) / S, each sample voting for its
    argmax class (Freeman 1965; Gal 2016, thesis §3.3.1; TorchUncertainty's ``variation_ratio``
    with ``probabilistic=False``). In [0, 1 - 1/C]; 0 when every sample agrees.

    [S, N, C, *] -> [N, *], float32 for half input, else the input's dtype. Raises as
    `check_sample_probs`."""
    sample_probs = check_sample_probs(sample_probs)
    return _variation_ratio(sample_probs.argmax(dim=2), sample_probs.dtype)
