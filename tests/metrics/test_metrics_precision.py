"""Low-precision probabilities and scores outside a streaming metric's range (issue 11, 6-7).

References are NumPy and scikit-learn computations written out here, never the code under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tradi.metrics import (
    ClassificationMetrics,
    OODMetrics,
    classification_metrics,
    ece,
    nll,
    ood_metrics,
    uncertainty_scores,
)

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _softmax_rows(n: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, ...]:
    """float32 softmax of wide logits (many tiny probabilities) and random labels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * spread
    labels = torch.randint(classes, (n,), generator=generator)
    return logits.softmax(dim=1), labels


def _numpy_nll(probs: torch.Tensor, labels: torch.Tensor, tiny: float) -> float:
    true_class = probs.float().numpy().astype(np.float64)[np.arange(len(labels)), labels.numpy()]
    return float(-np.log(np.maximum(true_class, tiny)).mean())


def test_float16_nll_clamps_at_float16s_smallest_normal_and_warns() -> None:
    probs32, labels = _softmax_rows(2000, 10, spread=6.0, seed=0)
    probs16 = probs32.half()
    true16 = probs16[torch.arange(2000), labels]
    underflowed = int((true16.float() < torch.finfo(torch.float16).tiny).sum())
    assert underflowed > 50  # the case of the issue: many true-class probabilities lost
    expected = _numpy_nll(probs16, labels, float(np.finfo(np.float16).tiny))
    with pytest.warns(RuntimeWarning, match=f"{underflowed} of 2000 true-class probabilities"):
        value = float(nll(probs16, labels))
    assert value == pytest.approx(expected, rel=1e-12)
    # the float32 tiny (what the code used to clamp at) gives a far larger figure
    assert _numpy_nll(probs16, labels, float(np.finfo(np.float32).tiny)) > value + 1
    with pytest.warns(RuntimeWarning, match="underflow"):
        assert classification_metrics(probs16, labels)["nll"] == pytest.approx(value, rel=1e-12)
    streamed = ClassificationMetrics()
    with pytest.warns(RuntimeWarning, match="underflow"):
        streamed.update(probs16, labels)
    assert streamed.compute()["nll"] == pytest.approx(value, rel=1e-12)


def test_nll_without_underflow_is_exact_and_silent() -> None:
    probs, labels = _softmax_rows(500, 4, spread=1.0, seed=1)
    for dtype in (torch.float32, *LOW_PRECISION):
        rows = probs.to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = float(nll(rows, labels))
        assert value == pytest.approx(_numpy_nll(rows, labels, 0.0), rel=1e-12), dtype


@pytest.mark.filterwarnings("ignore:.*underflow:RuntimeWarning")
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_softmax_outputs_are_accepted(dtype: torch.dtype) -> None:
    """bfloat16 rounding moves a row's sum by up to eps/2 = 3.9e-3: rows of a real softmax."""
    generator = torch.Generator().manual_seed(2)
    logits = (torch.randn(4000, 10, generator=generator) * 3).to(dtype)
    probs, labels = logits.softmax(dim=1), torch.randint(10, (4000,), generator=generator)
    metrics = classification_metrics(probs, labels)
    wide = probs.double().numpy()
    one_hot = np.eye(10)[labels.numpy()]
    assert metrics["brier"] == pytest.approx(((wide - one_hot) ** 2).sum(1).mean(), rel=1e-12)
    assert metrics["accuracy"] == pytest.approx((wide.argmax(1) == labels.numpy()).mean())
    scores = uncertainty_scores(probs.unsqueeze(0))
    entropy = -(wide * np.log(np.where(wide > 0, wide, 1.0))).sum(1)
    np.testing.assert_allclose(-scores["entropy"].double().numpy(), entropy, atol=1e-6)


def _numpy_ece(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> float:
    """(lo, hi] bins over the given inner edges (Guo et al. 2017)."""
    index = np.searchsorted(edges, confidence, side="left")
    total = 0.0
    for b in np.unique(index):
        in_bin = index == b
        total += abs(correct[in_bin].sum() - confidence[in_bin].sum())
    return total / len(confidence)


def test_float16_confidences_on_a_bin_edge_are_binned_by_float16_edges() -> None:
    """A float16 confidence equal to float16(m/M) closes bin m, as the docstring says."""
    n_bins = 15
    edges16 = np.array([np.float16(m / n_bins) for m in range(1, n_bins)], dtype=np.float64)
    edges32 = np.array([np.float32(m / n_bins) for m in range(1, n_bins)], dtype=np.float64)
    # the edges float16 rounds up past float32's: float32 edges would put them in bin m + 1
    up = edges16[(edges16 > edges32) & (edges16 >= 0.5)]
    assert len(up) >= 2
    # per such edge: a wrong prediction on it and a right one just below it, sharing bin m
    confidence = np.concatenate([up, up - 0.01]).astype(np.float16)
    labels = torch.tensor([1] * len(up) + [0] * len(up))
    probs = torch.from_numpy(np.stack([confidence, np.float16(1) - confidence], axis=1))
    assert probs.dtype == torch.float16
    correct = (labels.numpy() == 0).astype(np.float64)
    wide = confidence.astype(np.float64)
    expected = _numpy_ece(wide, correct, edges16)
    assert abs(expected - _numpy_ece(wide, correct, edges32)) > 0.1
    assert float(ece(probs, labels)) == pytest.approx(expected, abs=1e-12)
    streamed = ClassificationMetrics()
    streamed.update(probs, labels)
    assert streamed.compute()["ece"] == pytest.approx(expected, abs=1e-12)


# 14 in-distribution scores over [98, 100] and OOD scores 97.5 and 98.2: 26 of 28 pairs ordered
SCORES_IN = torch.linspace(98.0, 100.0, 14)
SCORES_OUT = torch.tensor([97.5, 98.2])


def _sklearn_auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    labels = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
    return float(roc_auc_score(labels, np.r_[scores_in.numpy(), scores_out.numpy()]))


@pytest.mark.parametrize("spacing", ["geometric_to_max", "uniform"])
def test_streamed_scores_outside_the_range_are_refused(spacing: str) -> None:
    metric = OODMetrics(spacing=spacing)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"score_range \[0, 1\].*\[97.5, 100\]"):
        metric.update(torch.cat([SCORES_IN, SCORES_OUT]), torch.arange(16) >= 14)
    with pytest.raises(ValueError, match="score_range"):
        metric.update(torch.tensor([0.5, float("inf")]), is_ood=False)
    with pytest.raises(ValueError, match="score_range"):
        metric.update(torch.tensor([-1e-12]), is_ood=True)
    assert int(metric.counts_in.sum() + metric.counts_out.sum()) == 0  # nothing half-counted


@pytest.mark.parametrize("spacing", ["geometric_to_max", "uniform"])
def test_streamed_scores_inside_a_stated_range_are_within_the_bounds(spacing: str) -> None:
    metric = OODMetrics(score_range=(97.5, 100.0), spacing=spacing)  # type: ignore[arg-type]
    metric.update(SCORES_IN, is_ood=False)
    metric.update(SCORES_OUT, is_ood=True)
    exact = _sklearn_auroc(SCORES_IN, SCORES_OUT)
    assert exact == pytest.approx(26 / 28)
    streamed, bounds = metric.compute(), metric.error_bounds()
    assert abs(streamed["auroc"] - exact) <= bounds["auroc"] + 1e-12
    reference = ood_metrics(SCORES_IN, SCORES_OUT)
    for key, value in reference.items():
        assert abs(streamed[key] - value) <= bounds[key] + 1e-12, key
    assert bounds["auroc"] < 0.01  # the bins resolve these scores
