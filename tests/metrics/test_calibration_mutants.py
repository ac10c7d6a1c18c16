"""Tests written against the mutants that survived mutmut on `metrics/calibration.py`
(docs/testing.md): the reliability diagram's equal-width edges, and equal-mass binning with a
single bin, against NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradi.metrics import adaptive_calibration_bins, adaptive_ece, calibration_bins


def _predictions(n: int = 40, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(n, classes, generator=g).softmax(1)
    return probs, torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("n_bins", [1, 4, 15])
def test_equal_width_edges_are_m_over_M_in_float64(n_bins: int) -> None:
    probs, labels = _predictions()
    edges = calibration_bins(probs, labels, n_bins).edges
    assert edges.dtype == torch.float64
    np.testing.assert_allclose(edges.numpy(), np.arange(n_bins + 1) / n_bins, rtol=0, atol=1e-15)


def test_one_equal_mass_bin_is_the_whole_set() -> None:
    probs, labels = _predictions()
    confidence = probs.max(1).values.double().numpy()
    correct = (probs.argmax(1) == labels).double().numpy()
    bins = adaptive_calibration_bins(probs, labels, n_bins=1)
    assert bins.count.tolist() == [40.0]
    np.testing.assert_array_equal(bins.edges.numpy(), [0.0, 1.0])
    expected = abs(correct.mean() - confidence.mean())
    assert adaptive_ece(probs, labels, n_bins=1).item() == pytest.approx(expected, rel=1e-12)
