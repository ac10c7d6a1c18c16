"""Conventions the other metric tests left unguarded (survivors of `make mutate`, docs/testing.md):
`ignore_index` in every single metric, the pooled ECE's defaults and dense input, the streamed
adaptive ECE on tied confidences, the streamed error bounds by hand, segmentation edge cases.

References are NumPy computations or hand counts written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradi.metrics import (
    ClassificationMetrics,
    OODMetrics,
    SegmentationMetrics,
    accuracy,
    adaptive_calibration_bins,
    adaptive_ece,
    brier_score,
    calibration_bins,
    ece,
    iou_per_class,
    mce,
    nll,
    ood_pr_curve,
    paper_pooled_ece,
    segmentation_metrics,
)
from tradi.metrics.segmentation import metrics_from_confusion

IGNORE = 9


def _predictions(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    probs = (torch.randn(n, classes, generator=generator) * 2).softmax(dim=1)
    return probs, torch.randint(classes, (n,), generator=generator)


@pytest.mark.parametrize(
    "metric",
    [nll, brier_score, accuracy, ece, mce, adaptive_ece],
    ids=lambda f: f.__name__,
)
def test_every_single_metric_leaves_ignored_positions_out(metric) -> None:
    probs, labels = _predictions(60, 3, seed=0)
    marked = labels.clone()
    marked[::4] = IGNORE
    kept = marked != IGNORE
    expected = metric(probs[kept], labels[kept])
    assert float(metric(probs, marked, ignore_index=IGNORE)) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        metric(probs, marked)  # without ignore_index the marker is an invalid class


def test_bins_functions_leave_ignored_positions_out() -> None:
    probs, labels = _predictions(45, 3, seed=1)
    marked = labels.clone()
    marked[1::3] = IGNORE
    kept = marked != IGNORE
    for bins in (calibration_bins, adaptive_calibration_bins):
        with_marker = bins(probs, marked, ignore_index=IGNORE)
        torch.testing.assert_close(with_marker.count, bins(probs[kept], labels[kept]).count)
        assert float(with_marker.total) == int(kept.sum())


def _numpy_pooled_ece(conf_in, correct_in, conf_out, n_bins: int) -> float:
    confidence = np.r_[conf_in, conf_out]
    correct = np.r_[correct_in, np.zeros(len(conf_out))]
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    return sum(
        abs(correct[index == b].sum() - confidence[index == b].sum()) for b in range(n_bins)
    ) / len(confidence)


def test_paper_pooled_ece_defaults_to_15_bins_and_reads_dense_ood_maps() -> None:
    probs_in, _ = _predictions(40, 4, seed=2)
    labels_in = probs_in.argmax(dim=1)  # all right: under-confident bins beside the OOD's
    generator = torch.Generator().manual_seed(3)
    ood_map = (torch.randn(2, 4, 3, 5, generator=generator) * 2).softmax(dim=1)  # [N, C, H, W]
    conf_in, predicted = probs_in.double().max(dim=1)
    correct_in = (predicted == labels_in).double().numpy()
    conf_out = ood_map.double().amax(dim=1).reshape(-1).numpy()
    for n_bins in (15, 7):
        expected = _numpy_pooled_ece(conf_in.numpy(), correct_in, conf_out, n_bins)
        got = paper_pooled_ece(probs_in, labels_in, ood_map, n_bins=n_bins)
        assert float(got) == pytest.approx(expected, abs=1e-6), n_bins
    assert _numpy_pooled_ece(conf_in.numpy(), correct_in, conf_out, 15) != pytest.approx(
        _numpy_pooled_ece(conf_in.numpy(), correct_in, conf_out, 16), abs=1e-4
    )  # mixed signs of the gaps: the bin count matters
    default = paper_pooled_ece(probs_in, labels_in, ood_map)
    assert float(default) == pytest.approx(
        _numpy_pooled_ece(conf_in.numpy(), correct_in, conf_out, 15), abs=1e-6
    )
    with pytest.raises(ValueError, match=r"^probs_ood is empty: the pooled ECE needs OOD"):
        paper_pooled_ece(probs_in, labels_in, torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"^probs_ood must sum to 1"):
        paper_pooled_ece(probs_in, labels_in, torch.full((2, 4), 0.5))


def test_streamed_adaptive_ece_is_exact_on_tied_confidences() -> None:
    """Seven distinct confidences, each in its own fine bin: the streamed equal-mass bins are the
    exact ones, edges and all, whatever the ties (bound checked by hand below)."""
    generator = torch.Generator().manual_seed(4)
    values = torch.tensor([0.55, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95], dtype=torch.float64)
    confidence = values[torch.randint(7, (90,), generator=generator)]
    confidence[:30] = values[2]  # a heavy tie that equal-mass edges fall inside
    probs = torch.stack([confidence, 1 - confidence], dim=1).float()
    labels = torch.randint(2, (90,), generator=generator)
    for n_bins in (3, 5, 15):
        streamed = ClassificationMetrics(n_bins=n_bins)
        streamed.update(probs, labels)
        exact = float(adaptive_ece(probs, labels, n_bins=n_bins))
        assert streamed.compute()["adaptive_ece"] == pytest.approx(exact, abs=1e-12), n_bins


def test_streamed_adaptive_bound_and_bins_by_hand() -> None:
    # 4 samples at 0.6 (2 right) and 4 at 0.9 (all right), 2 bins: the edge (rank 4) lies in the
    # fine bin of 0.6, whose |correct - conf| sum is 2*0.4 + 2*0.6 = 2.0: bound 2 * 2.0 / 8
    confidence = torch.tensor([0.6] * 4 + [0.9] * 4)
    probs = torch.stack([confidence, 1 - confidence], dim=1)
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 0, 0])
    metric = ClassificationMetrics(n_bins=2)
    metric.update(probs, labels)
    assert metric.adaptive_ece_error_bound() == pytest.approx(0.5, abs=1e-6)
    # (|2 - 2.4| + |4 - 3.6|) / 8 = 0.1, the same as the functional
    assert metric.compute()["adaptive_ece"] == pytest.approx(0.1, abs=1e-6)
    bins = metric.calibration_bins()
    torch.testing.assert_close(bins.edges, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("n_bins", [0, -1, True, 2.5])
def test_streamed_classification_refuses_bad_bin_counts(n_bins) -> None:
    with pytest.raises(ValueError, match=r"^n_bins must be a positive integer, got"):
        ClassificationMetrics(n_bins=n_bins)
    assert ClassificationMetrics(n_bins=1).n_bins == 1


def test_streamed_ood_bounds_by_hand() -> None:
    """Uniform bins of width 0.25. In: 0.9, 0.6, 0.6, 0.1; out: 0.65, 0.2. Bins from the top:
    [0.75, 1): 1 in; [0.5, 0.75): 2 in + 1 out (shared); [0, 0.25): 1 in + 1 out (shared)."""
    metric = OODMetrics(n_bins=4, spacing="uniform")
    metric.update(torch.tensor([0.9, 0.6, 0.6, 0.1]), is_ood=False)
    metric.update(torch.tensor([0.65, 0.2]), is_ood=True)
    bounds = metric.error_bounds()
    assert bounds["auroc"] == pytest.approx(0.5 * (2 * 1 + 1 * 1) / 8)
    # FPR95 (in positive): all 4 in needed -> lowest bin, 1 of the 2 OOD samples in it
    assert bounds["fpr95_tpr_in"] == pytest.approx(1 / 2)
    # AP (in positive): bin 1 adds 1 TP, P in [1, 1]; bin 2 adds 2 TP with P in
    # [(1+1)/(1+1+1), 3/(3+0)] = [2/3, 1]; bin 3 adds 1 TP with P in [(3+1)/(3+1+2), 4/(4+1)]
    expected = (1 * 0 + 2 * (1 - 2 / 3) + 1 * (4 / 5 - 4 / 6)) / 4
    assert bounds["aupr_in"] == pytest.approx(expected)


def test_pr_curve_defaults_to_in_distribution_positive() -> None:
    scores_in, scores_out = torch.tensor([0.9, 0.4, 0.8]), torch.tensor([0.5, 0.1])
    for got, want in zip(
        ood_pr_curve(scores_in, scores_out),
        ood_pr_curve(scores_in, scores_out, positive="in"),
        strict=True,
    ):
        torch.testing.assert_close(got, want)
    precision, recall, _ = ood_pr_curve(scores_in, scores_out)
    torch.testing.assert_close(recall[-1], torch.tensor(1.0, dtype=torch.float64))
    assert float(precision[1]) == 1.0  # the top score 0.9 is in-distribution


def test_a_class_seen_once_has_iou_one_and_counts_in_the_mean() -> None:
    probs = torch.zeros(1, 3, 1, 4)
    probs[0, 0, 0, :3] = 1.0
    probs[0, 2, 0, 3] = 1.0  # class 2 predicted once, labelled once: union 1, IoU 1
    labels = torch.tensor([[[0, 0, 1, 2]]])
    metrics = segmentation_metrics(probs, labels)
    # class 0: TP 2, FP 1 -> 2/3; class 1: TP 0, FN 1 -> 0; class 2: 1
    assert metrics["miou"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    per_class = iou_per_class(torch.tensor([[2, 0, 0], [1, 0, 0], [0, 0, 1]]))
    torch.testing.assert_close(per_class, torch.tensor([2 / 3, 0.0, 1.0], dtype=torch.float64))


def test_segmentation_arguments_are_checked() -> None:
    with pytest.raises(
        ValueError, match=r"^confusion must be a square \[C, C\] matrix, got \(2, 3\)"
    ):
        metrics_from_confusion(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(4,\)"):
        metrics_from_confusion(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^no labelled pixel"):
        metrics_from_confusion(torch.zeros(2, 2, dtype=torch.long))
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match=r"^num_classes must be a positive integer"):
            SegmentationMetrics(num_classes=bad)  # type: ignore[arg-type]
    single = SegmentationMetrics(num_classes=1)
    assert single.confusion.shape == (1, 1)
    metric = SegmentationMetrics(num_classes=3)
    with pytest.raises(ValueError, match=r"^probs has 2 classes along dim 1, expected 3"):
        metric.update(torch.full((4, 2), 0.5), torch.zeros(4, dtype=torch.long))
    metric.update(torch.eye(3), torch.tensor([0, 1, 2]))
    assert metric.compute()["miou"] == 1.0


def test_streamed_classification_before_any_sample_says_so() -> None:
    metric = ClassificationMetrics(ignore_index=IGNORE)
    metric.update(torch.full((2, 3), 1 / 3), torch.tensor([IGNORE, IGNORE]))
    with pytest.raises(
        ValueError, match=r"^ClassificationMetrics\.compute\(\) called before any non-ignored"
    ):
        metric.compute()


def test_streamed_ood_messages_name_the_argument() -> None:
    metric = OODMetrics()
    with pytest.raises(ValueError, match=r"^is_ood shape \(1,\) does not match scores shape"):
        metric.update(torch.tensor([0.9, 0.8]), is_ood=torch.tensor([True]))
    with pytest.raises(ValueError, match=r"^valid shape \(3,\) does not match scores shape"):
        metric.update(torch.tensor([0.9, 0.8]), is_ood=False, valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^scores contains NaN"):
        metric.update(torch.tensor([0.9, float("nan")]), is_ood=False)


def test_a_score_on_a_bin_edge_opens_its_bin() -> None:
    """Bins [e_k, e_k+1): an in-distribution 0.5 and an OOD 0.3 are apart, so exact."""
    metric = OODMetrics(n_bins=4, spacing="uniform")
    metric.update(torch.tensor([0.5]), is_ood=False)
    metric.update(torch.tensor([0.3]), is_ood=True)
    assert metric.compute()["auroc"] == 1.0
    assert set(metric.error_bounds().values()) == {0.0}


def test_one_sample_of_a_class_is_enough() -> None:
    metric = OODMetrics(n_bins=8, spacing="uniform")
    metric.update(torch.tensor([0.9]), is_ood=False)
    metric.update(torch.tensor([0.1, 0.2]), is_ood=True)
    assert metric.compute()["auroc"] == 1.0


def test_streamed_iou_per_class_is_that_of_its_confusion() -> None:
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.eye(3)[[0, 0, 1, 2]], torch.tensor([0, 1, 1, 2]))
    torch.testing.assert_close(
        metric.iou_per_class(), torch.tensor([1 / 2, 1 / 2, 1.0], dtype=torch.float64)
    )


def test_streamed_ood_counts_stay_exact_past_float32s_integers() -> None:
    """2^24 + 1 scores in one bin: integer counts, as a 10^8-pixel test set needs."""
    metric = OODMetrics(n_bins=4, spacing="uniform")
    metric.update(torch.full((2**24 + 1,), 0.9), is_ood=False)
    metric.update(torch.tensor([0.1]), is_ood=True)
    assert metric.counts_in.dtype == torch.long
    assert int(metric.counts_in.sum()) == 2**24 + 1


def test_streamed_segmentation_sums_the_ranks_confusion_matrices() -> None:
    """Two ranks simulated by torchmetrics' own hooks: the gather returns this rank's state and
    the other rank's; the reduced metric is that of both batches at once."""
    probs = torch.eye(3)[[0, 1, 1, 2, 2, 0]].reshape(2, 3, 3).permute(0, 2, 1)  # [2, C, 3]
    labels = torch.tensor([[0, 1, 2], [2, 2, 1]])
    other = SegmentationMetrics(num_classes=3)
    other.update(probs[1:], labels[1:])

    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, other.confusion]

    metric = SegmentationMetrics(
        num_classes=3, dist_sync_fn=gather, distributed_available_fn=lambda: True
    )
    metric.update(probs[:1], labels[:1])
    assert metric.compute() == segmentation_metrics(probs, labels)
