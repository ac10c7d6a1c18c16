"""Segmentation quality per pixel: mIoU, pixel accuracy and mean class accuracy.

All three are read off one confusion matrix (rows: true class, columns: predicted class) of the
non-ignored pixels, so the streamed `SegmentationMetrics` (a [C, C] int64 sum, DDP-reducible)
equals the functional `segmentation_metrics` of all pixels at once exactly: counts are
integers. Conventions (SegNet, ENet): IoU_c = TP_c / (TP_c + FP_c + FN_c); the mean is over the
classes that occur in the ground truth or the prediction (a class absent from both has no IoU
and is left out, not counted as 0 or 1); mean class accuracy averages TP_c / (TP_c + FN_c) over
the classes present in the ground truth.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from tradi.metrics._checks import flatten_predictions


def confusion_matrix(probs: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """[C, C] int64 counts of (true class, argmax class) over the non-ignored positions of
    probs [N, C, *] and labels [N, *]."""
    flat_probs, flat_labels = flatten_predictions(probs, labels, ignore_index)
    num_classes = flat_probs.shape[1]
    predicted = flat_probs.argmax(dim=1)
    pairs = flat_labels * num_classes + predicted
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_from_confusion(confusion: Tensor) -> dict[str, float]:
    """{"miou", "pixel_accuracy", "mean_class_accuracy"} of a [C, C] confusion matrix (module
    docstring for the classes each mean runs over)."""
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, got {tuple(confusion.shape)}")
    counts = confusion.double()
    total = counts.sum()
    if total == 0:
        raise ValueError("no labelled pixel: segmentation metrics are undefined")
    hits = counts.diagonal()
    true_per_class, predicted_per_class = counts.sum(dim=1), counts.sum(dim=0)
    union = true_per_class + predicted_per_class - hits
    seen, present = union > 0, true_per_class > 0
    return {
        "miou": float((hits[seen] / union[seen]).mean()),
        "pixel_accuracy": float(hits.sum() / total),
        "mean_class_accuracy": float((hits[present] / true_per_class[present]).mean()),
    }


def iou_per_class(confusion: Tensor) -> Tensor:
    """IoU of every class (float64 [C]); NaN for a class absent from labels and predictions."""
    counts = confusion.double()
    hits = counts.diagonal()
    union = counts.sum(dim=1) + counts.sum(dim=0) - hits
    return torch.where(union > 0, hits / union.clamp_min(1), torch.full_like(hits, torch.nan))


def segmentation_metrics(
    probs: Tensor, labels: Tensor, ignore_index: int | None = None
) -> dict[str, float]:
    """mIoU, pixel accuracy and mean class accuracy of argmax predictions, all pixels at once."""
    return metrics_from_confusion(confusion_matrix(probs, labels, ignore_index))


class SegmentationMetrics(Metric):
    """Streaming `segmentation_metrics`: batches of probs [N, C, H, W] and label maps [N, H, W]
    add to one confusion matrix, so memory never grows with the test set."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("confusion", default=zeros, dist_reduce_fx="sum")

    def update(self, probs: Tensor, labels: Tensor) -> None:
        if probs.ndim >= 2 and probs.shape[1] != self.num_classes:
            raise ValueError(
                f"probs has {probs.shape[1]} classes along dim 1, expected {self.num_classes}"
            )
        self.confusion = self.confusion + confusion_matrix(probs, labels, self.ignore_index)

    def compute(self) -> dict[str, float]:
        return metrics_from_confusion(self.confusion)

    def iou_per_class(self) -> Tensor:
        """IoU of every class so far (NaN where a class was never seen nor predicted)."""
        return iou_per_class(self.confusion)
