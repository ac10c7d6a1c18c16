"""OOD figures plot exactly scikit-learn's curves and NumPy's histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.patches import StepPatch
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from tradi.plots import confidence_histograms, ood_curves


def score_sets() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    return {
        "MCP": (
            torch.from_numpy(rng.beta(4, 1, 300).round(3)),
            torch.from_numpy(rng.beta(2, 2, 120)),
        ),
        "TRADI": (torch.from_numpy(rng.beta(6, 1, 300)), torch.from_numpy(rng.beta(2, 3, 120))),
    }


def test_curves_are_sklearn_points_with_metrics_in_the_legend() -> None:
    data = score_sets()
    figure = ood_curves(data)
    roc_axes, pr_in_axes, pr_out_axes = figure.axes
    for index, (name, (scores_in, scores_out)) in enumerate(data.items()):
        y = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
        s = np.r_[scores_in.numpy(), scores_out.numpy()]
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        line = roc_axes.lines[index]
        np.testing.assert_allclose(line.get_xdata(), fpr, atol=1e-15)
        np.testing.assert_allclose(line.get_ydata(), tpr, atol=1e-15)
        assert line.get_label() == f"{name} (AUROC {100 * roc_auc_score(y, s):.1f})"
        for axes, labels, signed in ((pr_in_axes, y, s), (pr_out_axes, 1 - y, -s)):
            precision, recall, _ = precision_recall_curve(labels, signed)
            line = axes.lines[index]
            np.testing.assert_allclose(line.get_xdata(), recall[::-1], atol=1e-15)
            np.testing.assert_allclose(line.get_ydata(), precision[::-1], atol=1e-15)
            assert line.get_drawstyle() == "steps-pre"
            ap = average_precision_score(labels, signed)
            assert line.get_label() == f"{name} (AUPR {100 * ap:.1f})"


def test_histograms_are_shares_per_bin() -> None:
    data = score_sets()
    figure = confidence_histograms(data, n_bins=20)
    for axes, (scores_in, scores_out) in zip(figure.axes, data.values(), strict=True):
        patches = [p for p in axes.patches if isinstance(p, StepPatch)]
        assert len(patches) == 2
        for patch, scores in zip(patches, (scores_in, scores_out), strict=True):
            values, edges, _ = patch.get_data()
            np.testing.assert_allclose(edges, np.linspace(0, 1, 21), atol=1e-15)
            expected, _ = np.histogram(scores.numpy(), bins=edges)  # the drawn edges, exactly
            np.testing.assert_allclose(values, expected / len(scores))
            assert values.sum() == pytest.approx(1.0)


def test_histogram_range_follows_the_scores_when_asked() -> None:
    scores_in, scores_out = torch.tensor([-2.0, -0.5, 0.0]), torch.tensor([-2.3, -1.0])
    figure = confidence_histograms({"entropy": (scores_in, scores_out)}, n_bins=4, score_range=None)
    values, edges, _ = figure.axes[0].patches[1].get_data()
    np.testing.assert_allclose(edges, np.linspace(-2.3, 0.0, 5))
    np.testing.assert_allclose(values, [0.5, 0, 0.5, 0])


def test_bad_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="TRADI: scores_out contains NaN"):
        confidence_histograms({"TRADI": (torch.rand(3), torch.tensor([float("nan")]))})
    with pytest.raises(ValueError, match="scores_out is empty"):
        ood_curves({"TRADI": (torch.rand(3), torch.tensor([]))})


def test_histograms_name_their_score_and_wrap() -> None:
    scores_in, scores_out = score_sets()["MCP"]
    data = {f"m{i}": (scores_in, scores_out) for i in range(6)}
    figure = confidence_histograms(data, score_name="MCP (max class probability)", title="seed 1")
    assert len(figure.axes) == 6  # 4 + 2 panels, the two unused grid cells removed
    assert {a.get_xlabel() for a in figure.axes} == {"MCP (max class probability)"}
    assert figure.get_suptitle() == "seed 1"
    assert ood_curves(score_sets(), title="seed 1").get_suptitle() == "seed 1"
