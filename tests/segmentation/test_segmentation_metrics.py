"""Pixel metrics: the streamed confusion matrix against scikit-learn on all pixels at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import jaccard_score

from tradi.metrics import (
    ClassificationMetrics,
    SegmentationMetrics,
    classification_metrics,
    confusion_matrix,
    iou_per_class,
    segmentation_metrics,
)

IGNORE = 255


def _maps(seed: int, n: int = 5, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(n, classes, 6, 7, generator=generator), dim=1)
    labels = torch.randint(0, classes, (n, 6, 7), generator=generator)
    labels[:, 0, :] = IGNORE
    return probs, labels


def test_functional_matches_sklearn() -> None:
    probs, labels = _maps(0)
    keep = labels != IGNORE
    truth, predicted = labels[keep].numpy(), probs.argmax(dim=1)[keep].numpy()
    expected_confusion = sk_confusion_matrix(truth, predicted, labels=np.arange(4))
    np.testing.assert_array_equal(
        confusion_matrix(probs, labels, IGNORE).numpy(), expected_confusion
    )
    metrics = segmentation_metrics(probs, labels, IGNORE)
    assert metrics["miou"] == pytest.approx(jaccard_score(truth, predicted, average="macro"))
    assert metrics["pixel_accuracy"] == pytest.approx(float((truth == predicted).mean()))
    recall = np.diag(expected_confusion) / expected_confusion.sum(axis=1)
    assert metrics["mean_class_accuracy"] == pytest.approx(recall.mean())


def test_streamed_equals_all_pixels_at_once() -> None:
    """Batches of different sizes, some with every pixel ignored, give the all-in-memory
    numbers: the confusion matrix exactly, and the calibration metrics to float64 rounding."""
    probs, labels = _maps(1, n=9)
    labels[3] = IGNORE
    streamed = SegmentationMetrics(num_classes=4, ignore_index=IGNORE)
    calibration = ClassificationMetrics(ignore_index=IGNORE)
    for start, stop in ((0, 2), (2, 3), (3, 4), (4, 9)):
        streamed.update(probs[start:stop], labels[start:stop])
        calibration.update(probs[start:stop], labels[start:stop])
    torch.testing.assert_close(streamed.confusion, confusion_matrix(probs, labels, IGNORE))
    assert streamed.compute() == segmentation_metrics(probs, labels, IGNORE)
    exact = classification_metrics(probs, labels, ignore_index=IGNORE)
    for key in ("accuracy", "nll", "brier", "ece", "mce"):
        assert calibration.compute()[key] == pytest.approx(exact[key], abs=1e-12)
    assert streamed.compute()["pixel_accuracy"] == pytest.approx(exact["accuracy"], abs=1e-12)


def test_class_absent_from_labels_and_predictions_is_left_out_of_the_mean() -> None:
    # class 2 never occurs: mIoU averages classes 0 and 1 only (1/2 and 2/3 by hand)
    probs = torch.zeros(1, 3, 1, 4)
    probs[0, 0, 0, :2] = 1.0  # predicts 0, 0, 1, 1
    probs[0, 1, 0, 2:] = 1.0
    labels = torch.tensor([[[0, 1, 1, 1]]])
    # class 0: TP 1, FP 1, FN 0 -> 1/2; class 1: TP 2, FP 0, FN 1 -> 2/3
    metrics = segmentation_metrics(probs, labels)
    assert metrics["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(3 / 4)
    assert metrics["mean_class_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    per_class = iou_per_class(confusion_matrix(probs, labels))
    assert torch.isnan(per_class[2]) and per_class[1] == pytest.approx(2 / 3)


def test_bad_inputs_are_refused() -> None:
    probs, labels = _maps(2)
    with pytest.raises(ValueError, match="classes along dim 1"):
        SegmentationMetrics(num_classes=3).update(probs, labels)
    with pytest.raises(ValueError, match="labels must lie in"):
        segmentation_metrics(probs, labels)  # 255 without ignore_index
    with pytest.raises(ValueError, match="no labelled pixel"):
        segmentation_metrics(probs, torch.full_like(labels, IGNORE), IGNORE)
    with pytest.raises(ValueError, match="positive integer"):
        SegmentationMetrics(num_classes=0)
