"""Accumulating metrics: update batch by batch, reduce across DDP ranks, compute once.

A segmentation test set has ~10^8 pixels; neither their probabilities nor a sort of their
scores fits in memory. Both classes here are torchmetrics Metrics whose states are fixed-size
sums (dist_reduce_fx="sum"), so `update` on every rank followed by `compute` (or `merge_state`)
gives the metric of all the data.

- `ClassificationMetrics`: exact for accuracy, NLL, Brier, ECE, MCE and the reliability bins
  (running sums; equal to the functional up to float64 rounding). The adaptive ECE is computed
  from a fine confidence histogram, treating each fine bin as a tie; its error bound is
  `adaptive_ece_error_bound()`.
- `OODMetrics`: score histograms per class. The metrics are the exact metrics of the binned
  scores; `error_bounds()` gives, from the histograms alone, a bound on the distance to the
  exact (sort-based) `ood_metrics` of the unbinned scores:
    auroc            0.5 * sum_j n_in_j n_out_j / (n_in n_out)   (pairs sharing a bin)
    aupr_*           sum_j (n_pos_j / n_pos) (P_hi_j - P_lo_j), the range the precision can take
                     inside bin j: P_hi = TP_j / (TP_j + FP_{j-1}), P_lo = (TP_{j-1}+1) /
                     (TP_{j-1} + 1 + FP_j), cumulative counts from the top
    fpr95_*          n_neg_j* / n_neg, the negatives in the bin holding the 95% threshold (the
                     binned FPR is the upper end of that range)
  Scores outside `score_range` (or infinite) are refused with a ValueError naming the range: in
  the end bins they would all tie, and the metrics would be those of the ties (AUROC 0.5), with
  bounds too wide to mean anything. Choose the range from what the score can take: [0, 1] for
  MCP, [-log C, 0] for entropy (`score_range_of` gives every score of `OOD_SCORES` its own).
  The default bins are geometric in the distance to the top of the range, because confident
  scores (MCP near 1, entropy near 0) pile up there: with the default 10^5 bins down to a gap
  of 1e-9, neighbouring edges differ by 0.02% of their distance to the top.
- Unbounded scores (``score_range=None``: ``logit``, ``energy``, ``ensemble_energy`` of
  `OOD_SCORES`) are binned after the strictly increasing map atan onto (-pi/2, pi/2), with bins
  geometric towards both ends (a bin's width is 0.04% of its distance to the nearer end, i.e.
  about 0.04% of |score| for |score| > 1). Decision: AUROC, AUPR and FPR95 depend only on the
  order of the scores, which a strictly increasing map keeps, so this is one pass in fixed
  memory with no range to guess. A range taken from the data would need a first pass (twice
  the prediction cost: S forward passes per pixel for an ensemble) or could be exceeded after
  it was fixed (a range from the first batches); exact metrics on kept scores do not fit a
  segmentation test set. `error_bounds()` still bounds the distance to the exact metrics.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from tradi.metrics._checks import check_scores, flatten_predictions
from tradi.metrics.calibration import (
    CalibrationBins,
    bin_statistics,
    brier_terms,
    equal_width_inner_edges,
    flat_confidence_and_correct,
    nll_terms,
)
from tradi.metrics.ood import (
    TPR_LEVEL,
    OperatingPoints,
    operating_points_from_histograms,
    summarize,
)
from tradi.metrics.ood_scores import score_spec

Spacing = Literal["uniform", "geometric_to_max", "geometric_to_ends"]
#: Scores a hair outside their mathematical range (float rounding: an entropy a little above
#: log C) are moved onto its end when within this share of the range's width.
ROUNDING_TOLERANCE = 1e-5

#: Per fine confidence bin: count, summed confidence, summed correctness, summed |correct - conf|.
_FINE_STATES = ("fine_count", "fine_confidence_sum", "fine_correct_sum", "fine_abs_gap_sum")


def score_bin_edges(
    n_bins: int,
    score_range: tuple[float, float] = (0.0, 1.0),
    spacing: Spacing = "geometric_to_max",
    min_gap: float = 1e-9,
) -> Tensor:
    """n_bins + 1 increasing float64 edges from low to high; "geometric_to_max" spaces them
    geometrically in (high - score) from (high - low) down to min_gap, then high;
    "geometric_to_ends" mirrors that about the middle: half the bins geometric towards each end.
    Raises ValueError for low >= high, n_bins < 2 (4 for "geometric_to_ends"), a min_gap
    outside (0, high - low) or an unknown spacing."""
    low, high = score_range
    if not low < high:
        raise ValueError(f"score_range must be (low, high) with low < high, got {score_range}")
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}")
    if spacing == "uniform":
        return torch.linspace(low, high, n_bins + 1, dtype=torch.float64)
    if spacing == "geometric_to_ends":
        if n_bins < 4:
            raise ValueError(f"n_bins must be at least 4 for 'geometric_to_ends', got {n_bins}")
        middle = (low + high) / 2
        upper = score_bin_edges(n_bins - n_bins // 2, (middle, high), "geometric_to_max", min_gap)
        lower = score_bin_edges(n_bins // 2, (middle, high), "geometric_to_max", min_gap)
        return torch.cat([(2 * middle - lower).flip(0)[:-1], upper])
    if spacing == "geometric_to_max":
        if not 0 < min_gap < high - low:
            raise ValueError(f"min_gap must lie in (0, high - low), got {min_gap}")
        gaps = torch.logspace(
            math.log10(high - low), math.log10(min_gap), n_bins, dtype=torch.float64
        )
        edges = torch.cat([high - gaps, torch.tensor([high], dtype=torch.float64)])
        edges[0] = low
        return edges
    raise ValueError(
        f"spacing must be 'uniform', 'geometric_to_max' or 'geometric_to_ends', got {spacing!r}"
    )


class ClassificationMetrics(Metric):
    """Streaming `classification_metrics` for probs [N, C] / [N, C, H, W] and labels."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        n_bins: int = 15,
        ignore_index: int | None = None,
        adaptive_resolution: int = 100_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
        self.n_bins = n_bins
        self.ignore_index = ignore_index
        self.fine_edges = score_bin_edges(adaptive_resolution)
        shapes = {name: (n_bins,) for name in ("count", "confidence_sum", "correct_sum")}
        shapes.update({name: (adaptive_resolution,) for name in _FINE_STATES})
        shapes.update(nll_sum=(), brier_sum=())
        for name, shape in shapes.items():
            zeros = torch.zeros(shape, dtype=torch.float64)
            self.add_state(name, default=zeros, dist_reduce_fx="sum")

    def update(self, probs: Tensor, labels: Tensor) -> None:
        flat_probs, flat_labels = flatten_predictions(probs, labels, self.ignore_index)
        confidence, correct = flat_confidence_and_correct(flat_probs, flat_labels)
        inner = equal_width_inner_edges(self.n_bins, confidence.dtype)
        coarse = bin_statistics(confidence, correct, inner, self.n_bins)
        for name, value in zip(("count", "confidence_sum", "correct_sum"), coarse, strict=True):
            setattr(self, name, getattr(self, name) + value)
        exact_confidence = confidence.double()
        fine_inner = self.fine_edges[1:-1].to(confidence.device)
        fine_index = torch.bucketize(exact_confidence, fine_inner, right=False)
        fine_values = (
            torch.ones_like(correct),
            exact_confidence,
            correct,
            (correct - exact_confidence).abs(),
        )
        for name, value in zip(_FINE_STATES, fine_values, strict=True):
            setattr(self, name, getattr(self, name).index_add(0, fine_index, value))
        # stacklevel 4: the user's update() call, through torchmetrics' wrapper of update
        self.nll_sum = self.nll_sum + nll_terms(flat_probs, flat_labels, stacklevel=4).sum()
        self.brier_sum = self.brier_sum + brier_terms(flat_probs, flat_labels).sum()

    def calibration_bins(self) -> CalibrationBins:
        """Equal-width bins of everything seen so far (for reliability diagrams)."""
        edges = torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64, device=self.count.device)
        return CalibrationBins(edges, self.count, self.confidence_sum, self.correct_sum)

    def _adaptive_groups(self) -> tuple[Tensor, Tensor]:
        """Equal-mass bin of every fine bin, and the fine bins that hold an equal-mass edge."""
        total = self.fine_count.sum()
        needed = torch.ceil(
            torch.arange(1, self.n_bins, dtype=torch.float64, device=total.device)
            * total
            / self.n_bins
        )
        edge_bins = torch.searchsorted(self.fine_count.cumsum(0), needed, right=False)
        fine_index = torch.arange(len(self.fine_count), device=total.device)
        return torch.bucketize(fine_index, edge_bins, right=False), edge_bins.unique()

    def adaptive_ece_error_bound(self) -> float:
        """Bound on |streamed - exact adaptive ECE|: only samples in the fine bins that hold an
        equal-mass edge can change bin, each moving the ECE by at most 2 |correct - conf| / n."""
        _, edge_bins = self._adaptive_groups()
        return float(2 * self.fine_abs_gap_sum[edge_bins].sum() / self.fine_count.sum())

    def _adaptive_ece(self) -> float:
        groups, _ = self._adaptive_groups()
        gap = torch.zeros(self.n_bins, dtype=torch.float64, device=groups.device)
        gap.index_add_(0, groups, self.fine_correct_sum - self.fine_confidence_sum)
        return float(gap.abs().sum() / self.fine_count.sum())

    def compute(self) -> dict[str, float]:
        total = self.count.sum()
        if total == 0:
            raise ValueError("ClassificationMetrics.compute() called before any non-ignored sample")
        bins = self.calibration_bins()
        return {
            "accuracy": float(self.correct_sum.sum() / total),
            "nll": float(self.nll_sum / total),
            "brier": float(self.brier_sum / total),
            "ece": float(bins.ece()),
            "mce": float(bins.mce()),
            "adaptive_ece": self._adaptive_ece(),
        }


class OODMetrics(Metric):
    """Streaming `ood_metrics` from per-class score histograms (bounds in the module docstring).

    ``score_range``: (low, high) the scores lie in, or None for an unbounded score (binned after
    atan, bins "geometric_to_ends"; ``spacing`` is then ignored). ``tolerance``: scores outside
    the range by at most this are moved onto its end (float rounding); 0 refuses them all.
    Build one per `OOD_SCORES` criterion with `score_ood_metrics`."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        n_bins: int = 100_000,
        score_range: tuple[float, float] | None = (0.0, 1.0),
        spacing: Spacing = "geometric_to_max",
        min_gap: float = 1e-9,
        tolerance: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.unbounded = score_range is None
        if score_range is None:
            score_range, spacing = (-math.pi / 2, math.pi / 2), "geometric_to_ends"
        self.edges = score_bin_edges(n_bins, score_range, spacing, min_gap)
        self.tolerance = tolerance
        for name in ("counts_in", "counts_out"):
            zeros = torch.zeros(n_bins, dtype=torch.long)
            self.add_state(name, default=zeros, dist_reduce_fx="sum")

    def update(self, scores: Tensor, is_ood: Tensor | bool, valid: Tensor | None = None) -> None:
        """scores of any shape (e.g. a per-pixel MCP map [N, H, W]); is_ood of the same shape
        (or one bool for the whole batch); valid masks out ignored positions.

        Raises ValueError for mismatched shapes, NaN, or a score outside ``score_range``."""
        if not isinstance(is_ood, Tensor):
            is_ood = torch.full(scores.shape, bool(is_ood), device=scores.device)
        for name, mask in (("is_ood", is_ood), ("valid", valid)):
            if mask is not None and mask.shape != scores.shape:
                raise ValueError(
                    f"{name} shape {tuple(mask.shape)} does not match scores shape "
                    f"{tuple(scores.shape)}"
                )
        if valid is not None:
            scores, is_ood = scores[valid.bool()], is_ood[valid.bool()]
        is_ood = is_ood.reshape(-1).bool()
        flat = scores.reshape(-1)
        if flat.numel() == 0:
            return
        flat = self._binned_values(check_scores(flat, "scores"))
        self._check_range(flat)
        index = torch.bucketize(flat, self.edges[1:-1].to(flat.device), right=True)
        n_bins = len(self.edges) - 1
        self.counts_in = self.counts_in + torch.bincount(index[~is_ood], minlength=n_bins)
        self.counts_out = self.counts_out + torch.bincount(index[is_ood], minlength=n_bins)

    def _binned_values(self, scores: Tensor) -> Tensor:
        """The values binned: atan of an unbounded score (float64: distinct scores stay
        distinct), else the scores with those within ``tolerance`` of the range moved onto it."""
        if self.unbounded:
            return torch.atan(scores.double())
        if self.tolerance <= 0:
            return scores
        low, high = float(self.edges[0]), float(self.edges[-1])
        near = (scores >= low - self.tolerance) & (scores <= high + self.tolerance)
        return torch.where(near, scores.clamp(low, high), scores)

    def _check_range(self, scores: Tensor) -> None:
        """ValueError unless every score lies in [low, high] of the bins."""
        low, high = float(self.edges[0]), float(self.edges[-1])
        smallest, largest = (float(v) for v in torch.aminmax(scores))
        if smallest < low or largest > high:
            raise ValueError(
                f"scores must lie in this OODMetrics' score_range [{low:g}, {high:g}], got values "
                f"in [{smallest:.6g}, {largest:.6g}]; build OODMetrics(score_range=(low, high)) "
                "with a range that holds every score the metric will see"
            )

    def _points(self) -> tuple[OperatingPoints, OperatingPoints]:
        """In-positive points (bins from the top down) and their OOD-positive reversal."""
        lower_edges = self.edges[:-1].to(self.counts_in.device)
        in_positive = operating_points_from_histograms(
            self.counts_in.flip(0), self.counts_out.flip(0), lower_edges.flip(0)
        )
        return in_positive, in_positive.reversed_roles()

    def compute(self) -> dict[str, float]:
        return summarize(*self._points())

    def error_bounds(self) -> dict[str, float]:
        """Bounds on |streamed - exact| for each key of `compute()`."""
        in_positive, out_positive = self._points()
        n_in, n_out = in_positive.n_positive, in_positive.n_negative
        shared_pairs = int((self.counts_in * self.counts_out).sum())
        return {
            "auroc": 0.5 * shared_pairs / (n_in * n_out),
            "aupr_in": _average_precision_bound(in_positive),
            "aupr_out": _average_precision_bound(out_positive),
            "fpr95_tpr_in": _fpr_bound(in_positive),
            "fpr95_tpr_out": _fpr_bound(out_positive),
        }


def _previous(counts: Tensor) -> Tensor:
    return torch.cat([counts.new_zeros(1), counts[:-1]])


def _average_precision_bound(points: OperatingPoints) -> float:
    tp, fp = points.true_positives.double(), points.false_positives.double()
    tp_before, fp_before = _previous(tp), _previous(fp)
    highest = tp / (tp + fp_before)
    lowest = (tp_before + 1) / (tp_before + 1 + fp)
    gained = tp - tp_before
    spread = torch.where(gained > 0, highest - lowest, torch.zeros_like(gained))
    return float((gained * spread).sum()) / points.n_positive


def _fpr_bound(points: OperatingPoints) -> float:
    index = points.index_at_tpr(TPR_LEVEL)
    fp = points.false_positives
    return int(fp[index] - _previous(fp)[index]) / points.n_negative


def score_range_of(name: str, num_classes: int) -> tuple[float, float] | None:
    """The range of the `OOD_SCORES` criterion ``name`` for ``num_classes`` classes C (None:
    unbounded). msp in [0, 1] (in fact [1/C, 1]); entropy and mutual_information in
    [-log C, 0] (0 <= MI <= H[p] <= log C); variation_ratio in [-1, 0]; variance in
    [-1/4, 0] (the variance of values in [0, 1] is at most 1/4); logit, energy and
    ensemble_energy unbounded. Raises ValueError for an unknown name or C < 2."""
    spec = score_spec(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    log_c = math.log(num_classes)
    ranges: dict[str, tuple[float, float] | None] = {
        "msp": (0.0, 1.0),
        "entropy": (-log_c, 0.0),
        "mutual_information": (-log_c, 0.0),
        "variation_ratio": (-1.0, 0.0),
        "variance": (-0.25, 0.0),
    }
    return ranges.get(spec.name)


def score_ood_metrics(name: str, num_classes: int, **kwargs: Any) -> OODMetrics:
    """An `OODMetrics` for the criterion ``name`` of `OOD_SCORES`: its `score_range_of` (atan
    for an unbounded one) and ``ROUNDING_TOLERANCE`` of the range's width; ``kwargs`` go to
    `OODMetrics` (``n_bins``, ``min_gap``, torchmetrics' options)."""
    score_range = score_range_of(name, num_classes)
    tolerance = (
        0.0 if score_range is None else ROUNDING_TOLERANCE * (score_range[1] - score_range[0])
    )
    return OODMetrics(score_range=score_range, tolerance=tolerance, **kwargs)
