"""Bad input fails with a message that says what is wrong.

The last section was written against the mutants that survived mutmut on `metrics/_checks.py`
(docs/testing.md): the exact text of every refusal, one class accepted, and the range and
sum-to-one bounds hit exactly (bfloat16, whose tolerance is its epsilon 2^-7)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tradi.metrics import (
    ClassificationMetrics,
    OODMetrics,
    classification_metrics,
    ece,
    fpr_at_tpr,
    ood_metrics,
    uncertainty_scores,
)
from tradi.metrics._checks import check_probabilities, check_scores, flatten_predictions

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


# --- metrics/_checks.py: the 2026-11-30 run's survivors ---------------------------------------

BF16_ATOL = 2**-7  # sum_tolerance(torch.bfloat16): its machine epsilon


def refusal(error: type[Exception], call: object, *args: object) -> str:
    with pytest.raises(error) as raised:
        call(*args)  # type: ignore[operator]
    return str(raised.value)


def test_non_tensors_are_refused_with_their_name_and_type() -> None:
    probs = torch.tensor([[0.5, 0.5]])
    assert (
        refusal(TypeError, check_probabilities, [[0.5, 0.5]])
        == "probs must be a torch.Tensor, got list"
    )
    assert (
        refusal(TypeError, flatten_predictions, probs, (0,))
        == "labels must be a torch.Tensor, got tuple"
    )
    assert (
        refusal(TypeError, check_scores, 0.5, "ood_scores")
        == "ood_scores must be a torch.Tensor, got float"
    )


def test_boolean_scores_are_refused_with_the_exact_text() -> None:
    assert (
        refusal(TypeError, check_scores, torch.tensor([True, False]), "s")
        == "s must be a real-valued tensor, got torch.bool"
    )


def test_one_class_is_accepted_and_none_is_refused_with_the_exact_text() -> None:
    one = torch.ones(3, 1)
    assert check_probabilities(one) is one
    assert (
        refusal(ValueError, check_probabilities, torch.empty(2, 0))
        == "probs has no classes (shape (2, 0))"
    )


def test_values_above_one_are_refused_by_the_range_check_with_the_exact_text() -> None:
    """1.5 (up to 2 + atol) must fail the range check, not only the sum."""
    assert refusal(ValueError, check_probabilities, torch.tensor([[1.5, 0.0]])) == (
        "probs must lie in [0, 1] (got values in [0, 1.5]); pass probabilities, not logits"
    )


@pytest.mark.parametrize(
    "row",
    [[-BF16_ATOL, 1 + BF16_ATOL], [0.5, 0.5 + BF16_ATOL]],
    ids=["range bounds", "sum bound"],
)
def test_values_and_sums_exactly_at_the_tolerance_are_accepted(row: list[float]) -> None:
    probs: Tensor = torch.tensor([row], dtype=torch.bfloat16)
    assert torch.tensor(row, dtype=torch.bfloat16).tolist() == row  # exactly representable
    assert check_probabilities(probs) is probs


@pytest.mark.parametrize(
    ("ignore_index", "text"),
    [(None, ""), (255, " or equal ignore_index=255")],
)
def test_labels_out_of_range_are_refused_with_the_exact_text(
    ignore_index: int | None, text: str
) -> None:
    probs, labels = torch.full((2, 3), 1 / 3), torch.tensor([0, 3])
    assert (
        refusal(ValueError, flatten_predictions, probs, labels, ignore_index)
        == f"labels must lie in [0, 2]{text}, got values in [0, 3]"
    )
