"""Reliability diagrams and confidence histograms (after Guo et al. 2017, figure 1)."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tradi.metrics import CalibrationBins
from tradi.plots._figure import check_methods, method_color, new_figure

GAP_COLOR = "tab:red"


def _draw_histogram(axes: Axes, bins: CalibrationBins, color: tuple[float, float, float]) -> None:
    """Share of samples per bin, with the accuracy and the mean confidence as vertical lines."""
    edges = bins.edges.numpy(force=True)
    share = (bins.count / bins.total).numpy(force=True)
    axes.bar(
        edges[:-1],
        share,
        width=edges[1:] - edges[:-1],
        align="edge",
        color=color,
        edgecolor="black",
        linewidth=0.5,
    )
    axes.axvline(
        bins.overall_accuracy.item(),
        color="black",
        linestyle="--",
        label=f"accuracy {bins.overall_accuracy.item():.3f}",
    )
    axes.axvline(
        bins.mean_confidence.item(),
        color="gray",
        linestyle=":",
        label=f"mean confidence {bins.mean_confidence.item():.3f}",
    )
    axes.set(xlim=(0, 1), ylim=(0, 1.15 * share.max()), ylabel="share of samples")
    axes.legend(loc="upper left", fontsize="small")


def _draw_reliability(axes: Axes, bins: CalibrationBins, color: tuple[float, float, float]) -> None:
    """Accuracy bars, gap bars up or down to the mean confidence, the diagonal, ECE in legend."""
    edges = bins.edges.numpy(force=True)
    non_empty = (bins.count > 0).numpy(force=True)
    accuracy = bins.accuracy.nan_to_num(0.0).numpy(force=True)
    gap = (bins.confidence - bins.accuracy).nan_to_num(0.0).numpy(force=True)
    widths = edges[1:] - edges[:-1]
    axes.bar(
        edges[:-1],
        accuracy,
        width=widths,
        align="edge",
        color=color,
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
        gid="accuracy",
    )
    axes.bar(
        edges[:-1][non_empty],
        gap[non_empty],
        bottom=accuracy[non_empty],
        width=widths[non_empty],
        align="edge",
        color=GAP_COLOR,
        alpha=0.3,
        edgecolor=GAP_COLOR,
        hatch="//",
        label="gap to confidence",
        gid="gap",
    )
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    axes.plot([], [], " ", label=f"ECE = {bins.ece().item():.4f}")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    axes.set_aspect("equal")
    axes.legend(loc="upper left", fontsize="small")


def reliability_diagram(
    bins_by_method: Mapping[str, CalibrationBins], histogram: bool = True
) -> Figure:
    """One column per method: the confidence histogram on top (if `histogram`), the reliability
    diagram below. Bins come from `tradi.metrics.calibration_bins` (or the adaptive bins, or
    `ClassificationMetrics.calibration_bins()` for streamed data); empty bins draw nothing."""
    check_methods(bins_by_method, "bins_by_method")
    empty = [name for name, bins in bins_by_method.items() if bins.total == 0]
    if empty:
        raise ValueError(f"no samples in the bins of {', '.join(empty)}")
    n_rows = 2 if histogram else 1
    figure, axes = new_figure(n_rows, len(bins_by_method), (3.6, 3.4))
    for column, (name, bins) in enumerate(bins_by_method.items()):
        color = method_color(column)
        if histogram:
            _draw_histogram(axes[0][column], bins, color)
        _draw_reliability(axes[-1][column], bins, color)
        axes[0][column].set_title(name)
    return figure
