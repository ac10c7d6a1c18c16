"""OOD metrics against scikit-learn and hand-computed cases (ties, imbalance, equal scores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from tradi.metrics import fpr_at_tpr, ood_metrics, ood_pr_curve, ood_roc_curve
from tradi.metrics.ood import operating_points


def sklearn_fpr_at_tpr(positive: np.ndarray, negative: np.ndarray, level: float = 0.95) -> float:
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    fpr, tpr, _ = roc_curve(y, np.r_[positive, negative], drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= level)])


def sklearn_reference(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    y = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
    s = np.r_[scores_in, scores_out]
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_in": average_precision_score(y, s),
        "aupr_out": average_precision_score(1 - y, -s),
        "fpr95_tpr_in": sklearn_fpr_at_tpr(scores_in, scores_out),
        "fpr95_tpr_out": sklearn_fpr_at_tpr(-scores_out, -scores_in),
    }


@pytest.mark.parametrize(
    ("n_in", "n_out", "decimals", "seed"),
    [
        (1000, 1000, None, 0),
        (400, 3000, 2, 1),  # many ties
        (10, 10_000, None, 2),  # heavily imbalanced both ways
        (10_000, 10, 1, 3),
        (20, 20, 1, 4),
    ],
)
def test_ood_metrics_match_sklearn(n_in: int, n_out: int, decimals: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores_in = rng.beta(5, 1, n_in)
    scores_out = rng.beta(2, 2, n_out)
    if decimals is not None:
        scores_in, scores_out = scores_in.round(decimals), scores_out.round(decimals)
    got = ood_metrics(torch.from_numpy(scores_in), torch.from_numpy(scores_out))
    expected = sklearn_reference(scores_in, scores_out)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_float32_scores_and_any_shape() -> None:
    generator = torch.Generator().manual_seed(5)
    scores_in = torch.rand(6, 7, 8, generator=generator) ** 0.2
    scores_out = torch.rand(500, generator=generator)
    got = ood_metrics(scores_in, scores_out)
    expected = sklearn_reference(scores_in.reshape(-1).numpy(), scores_out.numpy())
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_hand_computed_fpr95_counts_ties_at_the_threshold_as_accepted() -> None:
    scores_in = torch.arange(1.0, 21.0)  # 19 of 20 kept needs the threshold 2.0
    scores_out = torch.tensor([0.5, 2.0, 2.0, 3.0, 25.0])
    assert ood_metrics(scores_in, scores_out)["fpr95_tpr_in"] == pytest.approx(4 / 5)
    # 90% of 10 positives is exactly 9 (the decimal 0.9, not its binary value 0.9000...02)
    assert fpr_at_tpr(torch.arange(10.0), torch.tensor([0.5, 1.5]), tpr=0.9) == 0.5


def test_hand_computed_fpr95_ood_positive() -> None:
    scores_in = torch.tensor([0.9, 0.8, 0.2])
    scores_out = torch.arange(20.0) / 100  # 0.00 .. 0.19; 95% of them need the cut at -0.18
    # flagged as OOD: score <= 0.18; in-distribution flagged: none of 0.9, 0.8, 0.2
    assert ood_metrics(scores_in, scores_out)["fpr95_tpr_out"] == 0.0
    assert fpr_at_tpr(scores_in, scores_out, tpr=1.0, positive="out") == 0.0
    worse = torch.tensor([0.9, 0.1, 0.05])
    assert ood_metrics(worse, scores_out)["fpr95_tpr_out"] == pytest.approx(2 / 3)


def test_all_equal_scores() -> None:
    got = ood_metrics(torch.full((30,), 0.7), torch.full((70,), 0.7))
    assert got == {
        "auroc": 0.5,
        "aupr_in": pytest.approx(0.3),
        "aupr_out": pytest.approx(0.7),
        "fpr95_tpr_in": 1.0,
        "fpr95_tpr_out": 1.0,
    }


def test_perfect_and_inverted_separation() -> None:
    high, low = torch.linspace(0.6, 1.0, 50), torch.linspace(0.0, 0.4, 80)
    perfect = ood_metrics(high, low)
    assert perfect == {
        "auroc": 1.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
        "fpr95_tpr_in": 0.0,
        "fpr95_tpr_out": 0.0,
    }
    inverted = ood_metrics(low, high)
    assert inverted["auroc"] == 0.0
    assert inverted["fpr95_tpr_in"] == 1.0


def test_infinite_scores_are_ordered_not_rejected() -> None:
    got = ood_metrics(torch.tensor([float("inf"), 1.0]), torch.tensor([float("-inf"), 0.0]))
    assert got["auroc"] == 1.0


def test_curves_equal_sklearn_points() -> None:
    rng = np.random.default_rng(6)
    scores_in, scores_out = rng.beta(4, 1, 300).round(2), rng.beta(2, 2, 200).round(2)
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[scores_in, scores_out]
    fpr, tpr, thresholds = ood_roc_curve(torch.from_numpy(scores_in), torch.from_numpy(scores_out))
    ref_fpr, ref_tpr, ref_thresholds = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr.numpy(), ref_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr.numpy(), ref_tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(thresholds.numpy()[1:], ref_thresholds[1:])
    for positive, labels, signed in (("in", y, s), ("out", 1 - y, -s)):
        precision, recall, _ = ood_pr_curve(
            torch.from_numpy(scores_in), torch.from_numpy(scores_out), positive=positive
        )
        ref_precision, ref_recall, _ = precision_recall_curve(labels, signed)
        np.testing.assert_allclose(precision.numpy(), ref_precision[::-1], atol=1e-15)
        np.testing.assert_allclose(recall.numpy(), ref_recall[::-1], atol=1e-15)


# --- the 2026-11-30 mutmut run's survivors: the reversed points and the TPR level's bounds -----


def test_reversed_roles_are_the_points_of_the_other_class_with_negated_scores() -> None:
    positive = torch.tensor([0.9, 0.4, 0.4, 0.1], dtype=torch.float64)
    negative = torch.tensor([0.7, 0.4, 0.2], dtype=torch.float64)
    reversed_points = operating_points(positive, negative).reversed_roles()
    direct = operating_points(-negative, -positive)
    for field in ("thresholds", "true_positives", "false_positives"):
        assert torch.equal(getattr(reversed_points, field), getattr(direct, field)), field


@pytest.mark.parametrize("level", [0.0, 1.5])
def test_a_tpr_level_outside_zero_one_is_refused_with_the_exact_text(level: float) -> None:
    points = operating_points(torch.tensor([0.9, 0.4]), torch.tensor([0.2]))
    with pytest.raises(ValueError) as error:
        points.fpr_at_tpr(level)
    assert str(error.value) == f"the TPR level must lie in (0, 1], got {level}"
