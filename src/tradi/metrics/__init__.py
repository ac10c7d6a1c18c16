"""Calibration, classification and OOD-detection metrics: functional + accumulating pairs.

Functional (whole tensors in memory):
    classification_metrics(probs, labels) -> {"accuracy", "nll", "brier", "ece", "mce",
        "adaptive_ece"}; probs [N, C] or [N, C, H, W], labels [N] or [N, H, W], optional
        ignore_index. Conventions (bins ((m-1)/M, m/M], M = 15) in `tradi.metrics.calibration`.
    ood_metrics(scores_in, scores_out) -> dict, scores higher = more in-distribution:
        "auroc"          area under the ROC curve (the same whichever class is positive)
        "aupr_in"        average precision, in-distribution positive, scores as given
        "aupr_out"       average precision, OOD positive, scores negated (anomaly benchmarks)
        "fpr95_tpr_in"   the slides' FPR95: share of OOD samples scoring >= the threshold that
                         keeps >= 95% of the in-distribution samples
        "fpr95_tpr_out"  the public code's FPR95: OOD positive, scores negated; share of
                         in-distribution samples flagged at the threshold catching >= 95% of OOD
        Ties and the exact threshold rule are in `tradi.metrics.ood`.
    paper_pooled_ece(probs_in, labels_in, probs_ood): the paper's table ECE (OOD counted wrong),
        for comparison with the paper only.
    OOD scores by the field's names (`tradi.metrics.ood_scores`), all returned higher = more
        in-distribution (uncertainties negated), inputs samples first [S, N, C] or [S, N, C, H, W]:
        ood_score(name, sample_logits=None, sample_probs=None) -> [N] or [N, H, W];
        ood_scores(names=None, ...) -> dict of several; OOD_SCORES: name -> ScoreSpec (needs
        "logits" or "probs", ensemble_only, negated, formula, source). Names: msp, logit,
        energy, ensemble_energy, entropy, mutual_information, variation_ratio, variance.
        uncertainty_scores(sample_probs) -> every probability criterion; the old names (mcp,
        neg_entropy, neg_mutual_information, neg_variance) still read (SCORE_ALIASES).

Accumulating (batch by batch, DDP-reducible torchmetrics Metrics with the same output keys):
    ClassificationMetrics, OODMetrics (score histograms over `score_range`, default [0, 1]; a
    score outside it raises ValueError; with `error_bounds()`).

Probabilities in float16/bfloat16 are read in their own dtype: ECE bin edges are rounded to it
and the NLL clamps at its smallest normal number (float16: 9.70 nats at most per sample), with a
RuntimeWarning counting the true-class probabilities that underflowed.

Segmentation (`tradi.metrics.segmentation`): segmentation_metrics(probs, labels, ignore_index)
    -> {"miou", "pixel_accuracy", "mean_class_accuracy"} from one confusion matrix, and its
    streaming twin SegmentationMetrics(num_classes, ignore_index).
    Streaming OOD metrics of any criterion: score_ood_metrics(name, num_classes) -> OODMetrics
    over the score's own range (score_range_of; unbounded scores binned after atan).

Values in the dicts are Python floats (JSON-ready); single metrics return float64 tensors.
"""

from tradi.metrics.calibration import (
    CalibrationBins,
    accuracy,
    adaptive_calibration_bins,
    adaptive_ece,
    brier_score,
    calibration_bins,
    classification_metrics,
    ece,
    mce,
    nll,
    paper_pooled_ece,
)
from tradi.metrics.ood import fpr_at_tpr, ood_metrics, ood_pr_curve, ood_roc_curve
from tradi.metrics.ood_scores import (
    OOD_SCORES,
    SCORE_ALIASES,
    ScoreSpec,
    available_scores,
    ood_score,
    ood_scores,
    uncertainty_scores,
)
from tradi.metrics.scores import (
    mutual_information,
    predictive_entropy,
    sampled_variance,
    variation_ratio,
)
from tradi.metrics.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    iou_per_class,
    segmentation_metrics,
)
from tradi.metrics.streaming import (
    ClassificationMetrics,
    OODMetrics,
    score_bin_edges,
    score_ood_metrics,
    score_range_of,
)

__all__ = [
    "OOD_SCORES",
    "SCORE_ALIASES",
    "CalibrationBins",
    "ClassificationMetrics",
    "OODMetrics",
    "ScoreSpec",
    "SegmentationMetrics",
    "accuracy",
    "adaptive_calibration_bins",
    "adaptive_ece",
    "available_scores",
    "brier_score",
    "calibration_bins",
    "classification_metrics",
    "confusion_matrix",
    "ece",
    "fpr_at_tpr",
    "iou_per_class",
    "mce",
    "mutual_information",
    "nll",
    "ood_metrics",
    "ood_pr_curve",
    "ood_roc_curve",
    "ood_score",
    "ood_scores",
    "paper_pooled_ece",
    "predictive_entropy",
    "sampled_variance",
    "score_bin_edges",
    "score_ood_metrics",
    "score_range_of",
    "segmentation_metrics",
    "uncertainty_scores",
    "variation_ratio",
]
