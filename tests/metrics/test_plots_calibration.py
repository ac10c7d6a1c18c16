"""Reliability diagrams draw the bins they are given: bar heights, gaps, lines, legend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.container import BarContainer

from tradi.metrics import CalibrationBins, adaptive_calibration_bins, calibration_bins
from tradi.plots import reliability_diagram


def sample_bins() -> tuple[CalibrationBins, CalibrationBins]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 10, generator=generator, dtype=torch.float64) * 3
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    overconfident = (2 * logits).softmax(dim=1)
    return calibration_bins(overconfident, labels), adaptive_calibration_bins(overconfident, labels)


def bars(axes: Axes) -> list[BarContainer]:
    return [c for c in axes.containers if isinstance(c, BarContainer)]


def heights(container: BarContainer) -> np.ndarray:
    return np.array([patch.get_height() for patch in container.patches])


def test_reliability_bars_are_the_bin_accuracies_and_gaps() -> None:
    bins, adaptive = sample_bins()
    figure = reliability_diagram({"equal width": bins, "equal mass": adaptive})
    assert len(figure.axes) == 4
    for column, method_bins in enumerate((bins, adaptive)):
        histogram_axes, reliability_axes = figure.axes[column], figure.axes[2 + column]
        accuracy_bars, gap_bars = bars(reliability_axes)
        np.testing.assert_allclose(
            heights(accuracy_bars), method_bins.accuracy.nan_to_num(0).numpy()
        )
        x = np.array([patch.get_x() for patch in accuracy_bars.patches])
        widths = np.array([patch.get_width() for patch in accuracy_bars.patches])
        np.testing.assert_allclose(x, method_bins.edges[:-1].numpy())
        np.testing.assert_allclose(widths, np.diff(method_bins.edges.numpy()))
        non_empty = (method_bins.count > 0).numpy()
        np.testing.assert_allclose(
            [patch.get_y() for patch in gap_bars.patches], method_bins.accuracy.numpy()[non_empty]
        )
        # each gap bar ends at the bin's mean confidence
        tops = np.array([patch.get_y() + patch.get_height() for patch in gap_bars.patches])
        np.testing.assert_allclose(tops, method_bins.confidence.numpy()[non_empty])
        assert reliability_axes.get_title() == f"ECE = {method_bins.ece().item():.4f}"
        (share_bars,) = bars(histogram_axes)
        np.testing.assert_allclose(
            heights(share_bars), (method_bins.count / method_bins.total).numpy()
        )
        vertical = [line.get_xdata()[0] for line in histogram_axes.lines]
        assert vertical == pytest.approx(
            [method_bins.overall_accuracy.item(), method_bins.mean_confidence.item()]
        )
    assert [figure.axes[i].get_title() for i in (0, 1)] == ["equal width", "equal mass"]


def test_empty_bins_draw_no_bar_and_no_gap() -> None:
    probs = torch.tensor([[0.95, 0.05], [0.55, 0.45]])
    bins = calibration_bins(probs, torch.tensor([0, 1]), n_bins=5)
    figure = reliability_diagram({"two": bins}, histogram=False)
    (axes,) = figure.axes
    accuracy_bars, gap_bars = bars(axes)
    np.testing.assert_allclose(heights(accuracy_bars), [0, 0, 0, 0, 1])
    assert len(gap_bars.patches) == 2  # bins 3 and 5 only
    np.testing.assert_allclose(heights(gap_bars), [0.55, -0.05], atol=1e-7)


def test_empty_mapping_or_bins_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one method"):
        reliability_diagram({})
    zeros = torch.zeros(15, dtype=torch.float64)
    nothing = CalibrationBins(torch.linspace(0, 1, 16), zeros, zeros, zeros)
    with pytest.raises(ValueError, match="no samples in the bins of streamed"):
        reliability_diagram({"streamed": nothing})


def test_many_methods_wrap_into_rows_and_sparse_bins_are_faint() -> None:
    bins, _ = sample_bins()
    names = [f"method {i}" for i in range(7)]
    figure = reliability_diagram(dict.fromkeys(names, bins), title="test data, seed 0 of 3")
    assert len(figure.axes) == 14  # 7 histograms + 7 diagrams; the 8th grid cell removed
    width, height = figure.get_size_inches()
    assert width / height < 1.5  # 4 columns x 2 rows of panels, not an 8:1 strip
    assert figure.get_suptitle() == "test data, seed 0 of 3"
    assert [a.get_title() for a in figure.axes if a.get_title().startswith("method")] == names
    # one legend for the figure, below the panels, none inside a diagram
    assert len(figure.legends) == 1
    diagram = next(a for a in figure.axes if a.get_title().startswith("ECE"))
    assert diagram.get_legend() is None
    accuracy_bars, _ = bars(diagram)
    alphas = np.array([patch.get_facecolor()[3] for patch in accuracy_bars.patches])
    counts = bins.count.numpy()
    np.testing.assert_allclose(alphas, 0.2 + 0.8 * counts / counts.max())
