"""OOD detection metrics from in-distribution and OOD scores (higher = more in-distribution).

Every metric is read off the same object, the operating points: at each distinct threshold t,
taken from the highest score down, the number of positives and of negatives with score >= t.
Ties therefore never split: samples with equal scores are accepted or rejected together, as in
scikit-learn. The exact points come from a sort (`operating_points`); the streaming
`tradi.metrics.OODMetrics` builds them from score histograms, one point per bin, so both share
the formulas below. torchmetrics has AUROC and AP, but it applies a sigmoid to scores outside
[0, 1] (collapsing large scores into ties) and counts in float32 (inexact past 2^24 samples);
integer counts here keep AUROC exact at any size.

    AUROC   trapezoidal area under (FPR, TPR); symmetric in which class is positive.
    AP      sum_k (R_k - R_{k-1}) P_k, scikit-learn's step-wise average precision.
    FPR@TPR FPR at the highest threshold t whose TPR (share of positives with score >= t) is at
            least the level, i.e. the smallest FPR among operating points with TPR >= level;
            samples scoring exactly t count as accepted. Hendrycks' code instead takes the point
            whose recall is closest to the level, which can fall below it.

The two classes are in-distribution ("in", scores as given) and OOD ("out", scores negated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch
from torch import Tensor

from tradi.metrics._checks import check_scores

Positive = Literal["in", "out"]

#: The TPR level of the FPR95 metrics.
TPR_LEVEL = 0.95


@dataclass(frozen=True)
class OperatingPoints:
    """Cumulative counts at distinct thresholds, highest threshold first.

    true_positives[k] / false_positives[k]: positives / negatives with score >= thresholds[k]
    (int64, non-decreasing, the last entry counts every sample)."""

    thresholds: Tensor
    true_positives: Tensor
    false_positives: Tensor

    @property
    def n_positive(self) -> int:
        return int(self.true_positives[-1])

    @property
    def n_negative(self) -> int:
        return int(self.false_positives[-1])

    def reversed_roles(self) -> OperatingPoints:
        """The points with the other class positive and the scores negated: the same thresholds
        from the bottom up. Negatives with score <= v_k are all minus those >= v_{k-1}."""
        tp_before = torch.cat([self.true_positives.new_zeros(1), self.true_positives[:-1]])
        fp_before = torch.cat([self.false_positives.new_zeros(1), self.false_positives[:-1]])
        return OperatingPoints(
            thresholds=-self.thresholds.flip(0),
            true_positives=(self.n_negative - fp_before).flip(0),
            false_positives=(self.n_positive - tp_before).flip(0),
        )

    def roc_curve(self) -> tuple[Tensor, Tensor, Tensor]:
        """(fpr, tpr, thresholds) from (0, 0) at threshold +inf to (1, 1), like
        sklearn.metrics.roc_curve(drop_intermediate=False)."""
        zero = self.true_positives.new_zeros(1)
        tpr = torch.cat([zero, self.true_positives]).double() / self.n_positive
        fpr = torch.cat([zero, self.false_positives]).double() / self.n_negative
        inf = self.thresholds.new_full((1,), math.inf)
        return fpr, tpr, torch.cat([inf, self.thresholds])

    def precision_recall_curve(self) -> tuple[Tensor, Tensor, Tensor]:
        """(precision, recall, thresholds) with recall increasing, starting at (1, 0) as
        sklearn.metrics.precision_recall_curve ends (its arrays run the other way)."""
        tp = self.true_positives.double()
        precision = torch.cat([tp.new_ones(1), tp / (tp + self.false_positives)])
        recall = torch.cat([tp.new_zeros(1), tp / self.n_positive])
        return precision, recall, self.thresholds

    def auroc(self) -> float:
        """Trapezoids in integer arithmetic: sum dFP * (TP_k + TP_{k-1}) / (2 P N)."""
        tp = torch.cat([self.true_positives.new_zeros(1), self.true_positives])
        fp = torch.cat([self.false_positives.new_zeros(1), self.false_positives])
        twice_area = int(((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1])).sum())
        return twice_area / (2 * self.n_positive * self.n_negative)

    def average_precision(self) -> float:
        """sum_k (R_k - R_{k-1}) P_k: each new true positive weighted by the precision there."""
        tp = self.true_positives
        gained = tp - torch.cat([tp.new_zeros(1), tp[:-1]])
        precision = tp.double() / (tp + self.false_positives)
        return float((gained.double() * precision).sum()) / self.n_positive

    def index_at_tpr(self, level: float) -> int:
        """Index of the highest threshold with TPR >= level (`level` read as the decimal it
        prints as, so 0.95 of 20 positives is exactly 19)."""
        if not 0 < level <= 1:
            raise ValueError(f"the TPR level must lie in (0, 1], got {level}")
        needed = math.ceil(Fraction(repr(float(level))) * self.n_positive)
        return int(torch.searchsorted(self.true_positives, needed, right=False))

    def fpr_at_tpr(self, level: float) -> float:
        return int(self.false_positives[self.index_at_tpr(level)]) / self.n_negative


def operating_points(positive_scores: Tensor, negative_scores: Tensor) -> OperatingPoints:
    """Exact operating points by sorting all scores (1-D, checked by the caller; ties grouped)."""
    scores = torch.cat([positive_scores.double(), negative_scores.double()])
    is_positive = torch.cat(
        [
            torch.ones_like(positive_scores, dtype=torch.long),
            torch.zeros_like(negative_scores, dtype=torch.long),
        ]
    )
    scores, order = scores.sort(descending=True, stable=True)
    last_of_run = torch.cat(
        [
            torch.nonzero(scores[1:] != scores[:-1]).squeeze(1),
            scores.new_full((1,), len(scores) - 1, dtype=torch.long),
        ]
    )
    true_positives = is_positive[order].cumsum(0)[last_of_run]
    false_positives = last_of_run + 1 - true_positives
    return OperatingPoints(scores[last_of_run], true_positives, false_positives)


def operating_points_from_histograms(
    positive_counts: Tensor, negative_counts: Tensor, thresholds: Tensor
) -> OperatingPoints:
    """Operating points of binned scores: bins ordered from the highest scores down, each bin a
    tie (`thresholds` labels the bins); empty bins are dropped."""
    if positive_counts.sum() == 0 or negative_counts.sum() == 0:
        raise ValueError(
            "OOD metrics need at least one in-distribution and one OOD sample, got "
            f"{int(positive_counts.sum())} and {int(negative_counts.sum())}"
        )
    keep = (positive_counts + negative_counts) > 0
    true_positives = positive_counts.long().cumsum(0)[keep]
    false_positives = negative_counts.long().cumsum(0)[keep]
    return OperatingPoints(thresholds[keep].double(), true_positives, false_positives)


def summarize(in_positive: OperatingPoints, out_positive: OperatingPoints) -> dict[str, float]:
    """The named metrics from the points of both conventions (see the package docstring)."""
    return {
        "auroc": in_positive.auroc(),
        "aupr_in": in_positive.average_precision(),
        "aupr_out": out_positive.average_precision(),
        "fpr95_tpr_in": in_positive.fpr_at_tpr(TPR_LEVEL),
        "fpr95_tpr_out": out_positive.fpr_at_tpr(TPR_LEVEL),
    }


def _points(scores_in: Tensor, scores_out: Tensor, positive: Positive) -> OperatingPoints:
    if positive not in ("in", "out"):
        raise ValueError(f"positive must be 'in' or 'out', got {positive!r}")
    points = operating_points(
        check_scores(scores_in, "scores_in"), check_scores(scores_out, "scores_out")
    )
    return points if positive == "in" else points.reversed_roles()


def ood_metrics(scores_in: Tensor, scores_out: Tensor) -> dict[str, float]:
    """auroc, aupr_in, aupr_out, fpr95_tpr_in (the slides'), fpr95_tpr_out (the public code's)."""
    in_positive = _points(scores_in, scores_out, "in")
    return summarize(in_positive, in_positive.reversed_roles())


def fpr_at_tpr(
    scores_in: Tensor, scores_out: Tensor, tpr: float = TPR_LEVEL, positive: Positive = "in"
) -> float:
    """FPR at a TPR level other than 95%, with either class positive."""
    return _points(scores_in, scores_out, positive).fpr_at_tpr(tpr)


def ood_roc_curve(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(fpr, tpr, thresholds) with in-distribution positive."""
    return _points(scores_in, scores_out, "in").roc_curve()


def ood_pr_curve(
    scores_in: Tensor, scores_out: Tensor, positive: Positive = "in"
) -> tuple[Tensor, Tensor, Tensor]:
    """(precision, recall, thresholds); positive="out" negates the scores (AUPR-out)."""
    return _points(scores_in, scores_out, positive).precision_recall_curve()
