"""Bad input fails with a message that says what is wrong."""

from __future__ import annotations

import pytest
import torch

from tradi.metrics import (
    ClassificationMetrics,
    OODMetrics,
    classification_metrics,
    ece,
    fpr_at_tpr,
    ood_metrics,
    uncertainty_scores,
)

PROBS = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
LABELS = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (torch.tensor([[0.7, 0.2], [0.2, 0.8]]), LABELS, "sum to 1"),
        (torch.tensor([[2.0, -1.0], [0.2, 0.8]]), LABELS, "not logits"),
        (torch.tensor([[float("nan"), 0.3], [0.2, 0.8]]), LABELS, "NaN"),
        (torch.tensor([[float("inf"), 0.3], [0.2, 0.8]]), LABELS, r"must lie in \[0, 1\]"),
        (PROBS, torch.tensor([0, 1, 1]), "does not match"),
        (PROBS, torch.tensor([0, 2]), r"labels must lie in \[0, 1\]"),
        (PROBS, torch.tensor([-1, 1]), "labels must lie in"),
        (torch.tensor([0.7, 0.3]), torch.tensor([0]), "classes along dim 1"),
    ],
)
def test_classification_input_errors(
    probs: torch.Tensor, labels: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(probs, labels)
    with pytest.raises(ValueError, match=message):
        ClassificationMetrics().update(probs, labels)


def test_type_errors() -> None:
    with pytest.raises(TypeError, match="integer tensor"):
        ece(PROBS, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        ece(PROBS.numpy(), LABELS)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        ece(torch.tensor([[1, 0]]), torch.tensor([0]))


def test_everything_ignored_or_bad_bins() -> None:
    with pytest.raises(ValueError, match="no samples"):
        ece(PROBS, torch.tensor([255, 255]), ignore_index=255)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        ece(PROBS, LABELS, n_bins=0)
    with (
        pytest.raises(ValueError, match="before any non-ignored sample"),
        pytest.warns(UserWarning, match="before the ``update``"),
    ):
        ClassificationMetrics().compute()


@pytest.mark.parametrize(
    ("scores_in", "scores_out", "message"),
    [
        (torch.tensor([0.9, 0.8]), torch.tensor([]), "scores_out is empty"),
        (torch.tensor([]), torch.tensor([0.1]), "scores_in is empty"),
        (torch.tensor([0.9, float("nan")]), torch.tensor([0.1]), "scores_in contains NaN"),
    ],
)
def test_ood_input_errors(scores_in: torch.Tensor, scores_out: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ood_metrics(scores_in, scores_out)


def test_single_class_streamed_ood_set_and_bad_options() -> None:
    metric = OODMetrics()
    with (
        pytest.raises(ValueError, match="one in-distribution and one OOD sample, got 0 and 0"),
        pytest.warns(UserWarning, match="before the ``update``"),
    ):
        metric.compute()
    metric.update(torch.tensor([0.9, 0.8]), is_ood=False)
    with pytest.raises(ValueError, match="one in-distribution and one OOD sample, got 2 and 0"):
        metric.compute()
    with pytest.raises(ValueError, match="does not match scores shape"):
        metric.update(torch.tensor([0.9, 0.8]), is_ood=torch.tensor([True]))
    with pytest.raises(ValueError, match="TPR level must lie in"):
        fpr_at_tpr(torch.tensor([0.9]), torch.tensor([0.1]), tpr=1.5)
    with pytest.raises(ValueError, match="positive must be 'in' or 'out'"):
        fpr_at_tpr(torch.tensor([0.9]), torch.tensor([0.1]), positive="ood")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low < high"):
        OODMetrics(score_range=(1.0, 0.0))


def test_sample_probs_need_classes_at_dim_two() -> None:
    with pytest.raises(ValueError, match="sample_probs must sum to 1 over dim 2"):
        uncertainty_scores(torch.full((3, 4, 2), 0.2))
