"""Calibration and classification metrics of averaged predictive probabilities.

Inputs are probabilities [N, C] (or [N, C, H, W] for segmentation) with labels [N] (or
[N, H, W]); positions whose label equals `ignore_index` are left out of every metric.

Binning (Guo et al. 2017): M bins I_m = ((m-1)/M, m/M]; a confidence of exactly 1.0 lies in the
last bin and a confidence of 0 (impossible for the argmax of a distribution, but handled) in the
first. Bin edges are rounded to the confidences' own dtype before the comparison, so a float32
confidence equal to float32(m/M) lies in bin m, the bin it closes.

    ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|        MCE = max over non-empty bins
    adaptive ECE: the same sum over M equal-mass bins whose edges are the confidences of rank
    ceil(m n / M) (m = 1..M-1); equal confidences always share a bin, so with ties the bins
    are only nearly equal in mass and the result does not depend on the order of the samples.

NLL is the mean of -log p_y with p_y clamped below at the smallest normal number of the
probabilities' own dtype (float32 and bfloat16: NLL <= 87.3 per sample; float16: <= 9.70), so
that one underflowed probability does not turn a comparison into inf; a RuntimeWarning says how
many were clamped, since the clamped NLL is then only a lower bound (softmax in float32, or the
NLL from log-probabilities, avoids it). Every metric reads float16/bfloat16 probabilities in
their own dtype (edges, clamp) and sums in float64. The Brier score sums the squared error over classes
(range [0, 2]), averaged over samples. Accuracy uses the argmax (the first class on ties).
torchmetrics bins calibration as [a, b) and has no multi-class Brier score, hence this module.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from tradi.metrics._checks import check_probabilities, flatten_predictions


@dataclass(frozen=True)
class CalibrationBins:
    """Sufficient statistics of a reliability diagram: per-bin count, summed confidence and
    summed correctness. Summable across batches and ranks, so streaming and DDP are exact."""

    edges: Tensor
    count: Tensor
    confidence_sum: Tensor
    correct_sum: Tensor

    @property
    def n_bins(self) -> int:
        return self.count.numel()

    @property
    def total(self) -> Tensor:
        return self.count.sum()

    @property
    def accuracy(self) -> Tensor:
        """Accuracy per bin; NaN for an empty bin (nothing to plot there)."""
        return self.correct_sum / self.count

    @property
    def confidence(self) -> Tensor:
        """Mean confidence per bin; NaN for an empty bin."""
        return self.confidence_sum / self.count

    @property
    def overall_accuracy(self) -> Tensor:
        return self.correct_sum.sum() / self.total

    @property
    def mean_confidence(self) -> Tensor:
        return self.confidence_sum.sum() / self.total

    def ece(self) -> Tensor:
        """sum_m |B_m|/n |acc - conf| = sum_m |correct_sum - confidence_sum| / n."""
        return (self.correct_sum - self.confidence_sum).abs().sum() / self.total

    def mce(self) -> Tensor:
        gaps = (self.accuracy - self.confidence).abs()
        return gaps[self.count > 0].max()


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _flatten_nonempty(
    probs: Tensor, labels: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    flat_probs, flat_labels = flatten_predictions(probs, labels, ignore_index)
    if flat_labels.numel() == 0:
        raise ValueError("no samples to evaluate (empty input, or every label is ignore_index)")
    return flat_probs, flat_labels


def flat_confidence_and_correct(flat_probs: Tensor, flat_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Max probability [M] and whether its class (the first on ties) is the label, as float64."""
    confidence, predicted = flat_probs.max(dim=1)
    return confidence, (predicted == flat_labels).double()


def confidence_and_correct(
    probs: Tensor, labels: Tensor, ignore_index: int | None = None
) -> tuple[Tensor, Tensor]:
    """Max probability and whether its class is right, for every kept position (flat)."""
    return flat_confidence_and_correct(*_flatten_nonempty(probs, labels, ignore_index))


def equal_width_inner_edges(n_bins: int, dtype: torch.dtype) -> Tensor:
    """m/M for m = 1..M-1, correctly rounded to `dtype` (see the module docstring)."""
    return (torch.arange(1, n_bins, dtype=torch.float64) / n_bins).to(dtype)


def bin_statistics(
    confidence: Tensor, correct: Tensor, inner_edges: Tensor, n_bins: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Count, confidence sum and correct sum per bin (lo, hi]; float64 so sums stay exact."""
    index = torch.bucketize(confidence, inner_edges.to(confidence.dtype), right=False)
    count = torch.zeros(n_bins, dtype=torch.float64, device=confidence.device)
    confidence_sum = torch.zeros_like(count)
    correct_sum = torch.zeros_like(count)
    count.index_add_(0, index, torch.ones_like(confidence, dtype=torch.float64))
    confidence_sum.index_add_(0, index, confidence.double())
    correct_sum.index_add_(0, index, correct.double())
    return count, confidence_sum, correct_sum


def _equal_width_bins(confidence: Tensor, correct: Tensor, n_bins: int) -> CalibrationBins:
    _check_n_bins(n_bins)
    inner = equal_width_inner_edges(n_bins, confidence.dtype)
    stats = bin_statistics(confidence, correct, inner, n_bins)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=confidence.device)
    return CalibrationBins(edges, *stats)


def calibration_bins(
    probs: Tensor, labels: Tensor, n_bins: int = 15, ignore_index: int | None = None
) -> CalibrationBins:
    """Equal-width bins ((m-1)/M, m/M]: what the ECE, the MCE and a reliability diagram need."""
    return _equal_width_bins(*confidence_and_correct(probs, labels, ignore_index), n_bins)


def _equal_mass_bins(confidence: Tensor, correct: Tensor, n_bins: int) -> CalibrationBins:
    _check_n_bins(n_bins)
    n = confidence.numel()
    ranks = torch.tensor([-(-m * n // n_bins) - 1 for m in range(1, n_bins)], dtype=torch.long)
    inner = confidence.sort().values[ranks.to(confidence.device)]
    stats = bin_statistics(confidence, correct, inner, n_bins)
    edges = torch.cat([inner.new_zeros(1), inner, inner.new_ones(1)]).double()
    return CalibrationBins(edges, *stats)


def adaptive_calibration_bins(
    probs: Tensor, labels: Tensor, n_bins: int = 15, ignore_index: int | None = None
) -> CalibrationBins:
    """Equal-mass bins (e_{m-1}, e_m] with e_m the confidence of rank ceil(m n / M)."""
    return _equal_mass_bins(*confidence_and_correct(probs, labels, ignore_index), n_bins)


def ece(probs: Tensor, labels: Tensor, n_bins: int = 15, ignore_index: int | None = None) -> Tensor:
    """Expected calibration error over M equal-width bins (float64 scalar)."""
    return calibration_bins(probs, labels, n_bins, ignore_index).ece()


def mce(probs: Tensor, labels: Tensor, n_bins: int = 15, ignore_index: int | None = None) -> Tensor:
    """Maximum calibration error: the largest |acc - conf| over the non-empty bins."""
    return calibration_bins(probs, labels, n_bins, ignore_index).mce()


def adaptive_ece(
    probs: Tensor, labels: Tensor, n_bins: int = 15, ignore_index: int | None = None
) -> Tensor:
    """ECE over M equal-mass bins: every bin weighs the same, so sparse bins cannot hide."""
    return adaptive_calibration_bins(probs, labels, n_bins, ignore_index).ece()


def nll_terms(flat_probs: Tensor, flat_labels: Tensor, stacklevel: int = 3) -> Tensor:
    """-log p_y per sample (float64 [M]), p_y clamped at the smallest normal number of
    ``flat_probs``' own dtype; warns (RuntimeWarning) when any p_y lies below it, at the line
    `stacklevel` frames up (3: the user's call of the function that called this one)."""
    tiny = torch.finfo(flat_probs.dtype).tiny
    true_class = flat_probs.gather(1, flat_labels.unsqueeze(1)).squeeze(1).double()
    underflowed = int((true_class < tiny).sum())
    if underflowed:
        warnings.warn(
            f"{underflowed} of {true_class.numel()} true-class probabilities lie below "
            f"{tiny:.3g}, the smallest normal {flat_probs.dtype} number (underflow): their NLL "
            f"is clamped at {-math.log(tiny):.3g}, a lower bound; for the exact value compute the "
            "NLL from log-probabilities (or softmax in float32 rather than half precision)",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    return -true_class.clamp_min(tiny).log()


def brier_terms(flat_probs: Tensor, flat_labels: Tensor) -> Tensor:
    """sum_c (p_c - [c = y])^2 = sum_c p_c^2 - 2 p_y + 1 per sample (no one-hot [M, C])."""
    probs = flat_probs.double()
    true_class = probs.gather(1, flat_labels.unsqueeze(1)).squeeze(1)
    return probs.square().sum(dim=1) - 2 * true_class + 1


def nll(probs: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """Mean negative log-likelihood of the (averaged) probabilities."""
    return nll_terms(*_flatten_nonempty(probs, labels, ignore_index)).mean()


def brier_score(probs: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """Multi-class Brier score: squared error summed over classes, averaged over samples."""
    return brier_terms(*_flatten_nonempty(probs, labels, ignore_index)).mean()


def accuracy(probs: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """Share of positions whose argmax class is the label."""
    return confidence_and_correct(probs, labels, ignore_index)[1].mean()


def classification_metrics(
    probs: Tensor, labels: Tensor, n_bins: int = 15, ignore_index: int | None = None
) -> dict[str, float]:
    """accuracy, nll, brier, ece, mce, adaptive_ece in one call (JSON-ready floats)."""
    flat_probs, flat_labels = _flatten_nonempty(probs, labels, ignore_index)
    confidence, correct = flat_confidence_and_correct(flat_probs, flat_labels)
    bins = _equal_width_bins(confidence, correct, n_bins)
    return {
        "accuracy": correct.mean().item(),
        "nll": nll_terms(flat_probs, flat_labels).mean().item(),
        "brier": brier_terms(flat_probs, flat_labels).mean().item(),
        "ece": bins.ece().item(),
        "mce": bins.mce().item(),
        "adaptive_ece": _equal_mass_bins(confidence, correct, n_bins).ece().item(),
    }


def paper_pooled_ece(
    probs_in: Tensor, labels_in: Tensor, probs_ood: Tensor, n_bins: int = 15
) -> Tensor:
    """The ECE of the TRADI paper's tables: in-distribution and OOD predictions pooled, every
    OOD prediction counted wrong. Only for comparison with the paper; the in-distribution
    `ece` is the calibration figure to report."""
    confidence_in, correct_in = confidence_and_correct(probs_in, labels_in)
    probs_ood = check_probabilities(probs_ood, "probs_ood")
    num_classes = probs_ood.shape[1]
    if num_classes != probs_in.shape[1]:
        raise ValueError(
            f"probs_ood has {num_classes} classes but probs_in has {probs_in.shape[1]}"
        )
    confidence_ood = probs_ood.movedim(1, -1).reshape(-1, num_classes).max(dim=1).values
    if confidence_ood.numel() == 0:
        raise ValueError("probs_ood is empty: the pooled ECE needs OOD predictions")
    confidence = torch.cat([confidence_in, confidence_ood.to(confidence_in.dtype)])
    correct = torch.cat([correct_in, torch.zeros_like(confidence_ood, dtype=torch.float64)])
    return _equal_width_bins(confidence, correct, n_bins).ece()
