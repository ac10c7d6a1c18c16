"""Calibration metrics against hand-computed cases and independent NumPy re-computations."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch

from tradi.metrics import (
    ClassificationMetrics,
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
from tradi.metrics.calibration import bin_statistics, equal_width_inner_edges


def two_class(confidences: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Probabilities [c, 1 - c]: the argmax is class 0 and its confidence c (c >= 0.5)."""
    conf = torch.tensor(confidences, dtype=dtype)
    return torch.stack([conf, 1 - conf], dim=1)


def random_probs(n: int, c: int, seed: int, sharpness: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=generator, dtype=torch.float64) * sharpness
    return logits.softmax(dim=1)


def calibrated_labels(probs: torch.Tensor, seed: int) -> torch.Tensor:
    """Labels drawn from the probabilities themselves, so the ECE is small but not zero."""
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def numpy_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[float, float]:
    """ECE and MCE with bins ((m-1)/M, m/M] found by ceil (no confidence on an edge here)."""
    index = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total, worst = 0.0, 0.0
    for m in range(n_bins):
        members = index == m
        if members.any():
            gap = abs(correct[members].mean() - conf[members].mean())
            total += members.sum() / len(conf) * gap
            worst = max(worst, gap)
    return total, worst


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hand_computed_ece_with_edges_empty_bins_and_confidence_one(dtype: torch.dtype) -> None:
    # M = 5: 0.6 sits on the edge of bin 3 (0.4, 0.6]; 1.0 belongs to the last bin.
    probs = two_class([0.6, 1.0, 0.9, 0.7], dtype)
    labels = torch.tensor([0, 0, 1, 1])
    bins = calibration_bins(probs, labels, n_bins=5)
    assert bins.count.tolist() == [0, 0, 1, 1, 2]
    assert torch.isnan(bins.accuracy[:2]).all() and torch.isnan(bins.confidence[:2]).all()
    assert bins.accuracy[2:].tolist() == [1.0, 0.0, 0.5]
    assert bins.confidence[2:].tolist() == pytest.approx([0.6, 0.7, 0.95], abs=1e-7)
    # (1 * 0.4 + 1 * 0.7 + 2 * 0.45) / 4 = 0.5
    assert ece(probs, labels, n_bins=5).item() == pytest.approx(0.5, abs=1e-7)
    assert mce(probs, labels, n_bins=5).item() == pytest.approx(0.7, abs=1e-7)


def test_every_edge_closes_its_own_bin_with_fifteen_bins() -> None:
    edges = [m / 15 for m in range(8, 16)]  # m/M for the confidences a 2-class argmax can take
    bins = calibration_bins(two_class(edges), torch.zeros(len(edges), dtype=torch.long))
    expected = [0] * 7 + [1] * 8
    assert bins.count.tolist() == expected


def test_confidence_zero_goes_to_the_first_bin() -> None:
    confidence = torch.tensor([0.0, 1.0, 0.5])
    count, _, _ = bin_statistics(
        confidence, torch.ones(3), equal_width_inner_edges(15, confidence.dtype), 15
    )
    assert count[0] == 1 and count[-1] == 1 and count[7] == 1  # 0.5 in (7/15, 8/15]


def test_perfectly_calibrated_bins_give_zero_ece() -> None:
    # 10 predictions of 0.8, 8 right; 10 of 1.0, all right.
    probs = two_class([0.8] * 10 + [1.0] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2 + [0] * 10)
    assert ece(probs, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert mce(probs, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_ece_and_mce_match_numpy_on_random_predictions() -> None:
    probs = random_probs(3000, 10, seed=1)
    labels = calibrated_labels(probs, seed=2)
    conf, predicted = probs.max(dim=1)
    correct = (predicted == labels).double().numpy()
    expected_ece, expected_mce = numpy_ece(conf.numpy(), correct, 15)
    assert ece(probs, labels).item() == pytest.approx(expected_ece, rel=1e-12)
    assert mce(probs, labels).item() == pytest.approx(expected_mce, rel=1e-12)
    bins = calibration_bins(probs, labels)
    assert bins.count.sum().item() == 3000
    assert bins.overall_accuracy.item() == pytest.approx(correct.mean(), rel=1e-12)
    assert bins.mean_confidence.item() == pytest.approx(conf.mean().item(), rel=1e-12)


def test_adaptive_ece_matches_equal_mass_split_when_n_divides() -> None:
    probs = random_probs(1500, 10, seed=3)
    labels = calibrated_labels(probs, seed=4)
    conf, predicted = probs.max(dim=1)
    order = np.argsort(conf.numpy())
    correct = (predicted == labels).double().numpy()[order]
    sorted_conf = conf.numpy()[order]
    expected = sum(
        abs(correct[chunk].sum() - sorted_conf[chunk].sum()) / 1500
        for chunk in np.array_split(np.arange(1500), 15)
    )
    assert adaptive_ece(probs, labels).item() == pytest.approx(expected, rel=1e-12)
    assert adaptive_calibration_bins(probs, labels).count.tolist() == [100] * 15


def test_adaptive_bins_use_rank_ceil_m_n_over_m() -> None:
    # n = 7, M = 5: edges at ranks ceil(1.4), ceil(2.8), ceil(4.2), ceil(5.6) = 2, 3, 5, 6.
    probs = two_class([0.51, 0.52, 0.53, 0.54, 0.55, 0.56, 0.57])
    bins = adaptive_calibration_bins(probs, torch.zeros(7, dtype=torch.long), n_bins=5)
    assert bins.count.tolist() == [2, 1, 2, 1, 1]


def test_adaptive_ece_keeps_ties_together_and_ignores_sample_order() -> None:
    probs = two_class([0.7] * 6 + [0.9] * 4)
    labels = torch.tensor([0, 1, 0, 1, 0, 0, 0, 0, 1, 0])
    bins = adaptive_calibration_bins(probs, labels, n_bins=3)
    assert sorted(bins.count.tolist()) == [0, 4, 6]
    # |4 - 4.2| + |3 - 3.6| over 10 samples
    assert adaptive_ece(probs, labels, n_bins=3).item() == pytest.approx(0.08, abs=1e-6)
    permutation = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    shuffled = adaptive_ece(probs[permutation], labels[permutation], n_bins=3)
    assert shuffled.item() == pytest.approx(0.08, abs=1e-6)


def test_nll_brier_accuracy_match_numpy() -> None:
    probs = random_probs(500, 7, seed=5)
    labels = calibrated_labels(probs, seed=6)
    p, y = probs.numpy(), labels.numpy()
    assert nll(probs, labels).item() == pytest.approx(
        -np.log(p[np.arange(500), y]).mean(), rel=1e-12
    )
    one_hot = np.eye(7)[y]
    assert brier_score(probs, labels).item() == pytest.approx(
        ((p - one_hot) ** 2).sum(axis=1).mean(), rel=1e-12
    )
    assert accuracy(probs, labels).item() == pytest.approx((p.argmax(1) == y).mean(), rel=1e-12)


def test_nll_of_an_underflowed_probability_is_finite() -> None:
    probs = torch.tensor([[1.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="1 of 1 true-class probabilities.*underflow"):
        value = nll(probs, torch.tensor([1])).item()
    assert value == pytest.approx(-math.log(torch.finfo(torch.float32).tiny), rel=1e-6)


def test_brier_extremes() -> None:
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert brier_score(probs, torch.tensor([0, 1])).item() == pytest.approx(1.0)  # (0 + 2) / 2


def test_segmentation_with_ignore_index_equals_flattened_classification() -> None:
    generator = torch.Generator().manual_seed(7)
    probs = torch.randn(2, 4, 5, 6, generator=generator, dtype=torch.float64).softmax(dim=1)
    labels = torch.randint(0, 4, (2, 5, 6), generator=generator)
    labels[0, :2] = 255
    flat_probs = probs.movedim(1, -1).reshape(-1, 4)
    flat_labels = labels.reshape(-1)
    keep = flat_labels != 255
    expected = classification_metrics(flat_probs[keep], flat_labels[keep])
    got = classification_metrics(probs, labels, ignore_index=255)
    assert got.keys() == {"accuracy", "nll", "brier", "ece", "mce", "adaptive_ece"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_paper_pooled_ece_counts_every_ood_prediction_wrong() -> None:
    probs_in = two_class([0.9, 0.9])
    labels_in = torch.tensor([0, 0])
    probs_ood = two_class([0.9, 0.9])
    # one bin, accuracy 2/4, confidence 0.9
    assert paper_pooled_ece(probs_in, labels_in, probs_ood).item() == pytest.approx(0.4, abs=1e-6)
    assert ece(probs_in, labels_in).item() == pytest.approx(0.1, abs=1e-6)


def test_paper_pooled_ece_rejects_mismatched_classes() -> None:
    with pytest.raises(ValueError, match="3 classes but probs_in has 2"):
        paper_pooled_ece(two_class([0.9]), torch.tensor([0]), torch.full((1, 3), 1 / 3))


# --- the 2026-11-30 mutmut run's survivors: edges in the confidences' dtype, refusals, NLL underflow


def test_inner_edges_are_m_over_m_correctly_rounded_to_the_dtype() -> None:
    exact = torch.arange(1, 10, dtype=torch.float64) / 10  # float64 division: correctly rounded
    assert torch.equal(equal_width_inner_edges(10, torch.float64), exact)
    single = equal_width_inner_edges(10, torch.float32)
    assert single.dtype == torch.float32 and torch.equal(single, exact.float())


def test_a_float32_confidence_equal_to_a_rounded_edge_falls_in_the_bin_below_it() -> None:
    """float32(0.6) > 0.6: against the float32 edge it lies on (0.5, 0.6]'s upper edge."""
    bins = calibration_bins(torch.tensor([[0.6, 0.4]]), torch.tensor([0]), n_bins=10)
    assert bins.count.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    # bin_statistics rounds float64 edges to the confidences' dtype itself
    float64_edges = torch.arange(1, 10, dtype=torch.float64) / 10
    count, _, _ = bin_statistics(torch.tensor([0.6]), torch.ones(1), float64_edges, 10)
    assert count.tolist() == bins.count.tolist()


def test_bin_statistics_are_allocated_on_the_confidences_device() -> None:
    meta = torch.device("meta")
    confidence = torch.empty(3, device=meta)
    inner = torch.empty(4, dtype=torch.float64, device=meta)
    stats = bin_statistics(confidence, torch.empty(3, device=meta), inner, 5)
    assert all(t.device == meta for t in stats)


@pytest.mark.parametrize("n_bins", [True, 2.5, 0])
def test_n_bins_must_be_a_positive_integer_exactly(n_bins: object) -> None:
    with pytest.raises(ValueError) as error:
        calibration_bins(torch.tensor([[0.6, 0.4]]), torch.tensor([0]), n_bins=n_bins)  # type: ignore[arg-type]
    assert str(error.value) == f"n_bins must be a positive integer, got {n_bins!r}"


def test_no_sample_left_is_refused_with_the_exact_text() -> None:
    with pytest.raises(ValueError) as error:
        nll(torch.tensor([[0.6, 0.4]]), torch.tensor([-1]), ignore_index=-1)
    assert str(error.value) == (
        "no samples to evaluate (empty input, or every label is ignore_index)"
    )


def test_nll_underflow_warning_text_and_a_probability_exactly_at_the_bound() -> None:
    tiny = torch.finfo(torch.float32).tiny
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # p_y = tiny is the bound itself: no warning
        assert nll(torch.tensor([[tiny, 1.0]]), torch.tensor([0])).item() == -math.log(tiny)
    with pytest.warns(RuntimeWarning) as record:
        nll(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), torch.tensor([0, 0]))
    assert [str(w.message) for w in record] == [
        "1 of 2 true-class probabilities lie below 1.18e-38, the smallest normal torch.float32 "
        "number (underflow): their NLL is clamped at 87.3, a lower bound; for the exact value "
        "compute the NLL from log-probabilities (or softmax in float32 rather than half precision)"
    ]


@pytest.mark.skipif(
    "MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampolines add stack frames"
)
@pytest.mark.parametrize("entry", ["nll", "classification_metrics", "ClassificationMetrics"])
def test_the_nll_underflow_warning_points_at_the_callers_line(entry: str) -> None:
    probs, labels = torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    calls = {
        "nll": lambda: nll(probs, labels),
        "classification_metrics": lambda: classification_metrics(probs, labels),
        "ClassificationMetrics": lambda: ClassificationMetrics().update(probs, labels),
    }
    with pytest.warns(RuntimeWarning, match="underflow") as record:
        calls[entry]()
    assert (record[0].filename, record[0].lineno) == (
        __file__,
        calls[entry].__code__.co_firstlineno,
    )
