"""Reliability diagrams and confidence histograms (after Guo et al. 2017, figure 1)."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from tradi.metrics import CalibrationBins
from tradi.plots._figure import check_methods, method_color, panel_grid

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
    """Accuracy bars, gap bars up or down to the mean confidence, the diagonal, ECE in legend.
    A bar's opacity grows with the samples its bin holds (`bin_opacity`)."""
    edges = bins.edges.numpy(force=True)
    non_empty = (bins.count > 0).numpy(force=True)
    opacity = bin_opacity(bins)
    colors = [(*color, alpha) for alpha in opacity]
    gap_colors = [
        (*to_rgb(GAP_COLOR), 0.4 * alpha)
        for alpha, keep in zip(opacity, non_empty, strict=True)
        if keep
    ]
    accuracy = bins.accuracy.nan_to_num(0.0).numpy(force=True)
    gap = (bins.confidence - bins.accuracy).nan_to_num(0.0).numpy(force=True)
    widths = edges[1:] - edges[:-1]
    axes.bar(
        edges[:-1],
        accuracy,
        width=widths,
        align="edge",
        color=colors,
        edgecolor="black",
        linewidth=0.5,
        label="accuracy per bin (opacity: samples in the bin)",
        gid="accuracy",
    )
    axes.bar(
        edges[:-1][non_empty],
        gap[non_empty],
        bottom=accuracy[non_empty],
        width=widths[non_empty],
        align="edge",
        color=gap_colors,
        edgecolor=GAP_COLOR,
        hatch="//",
        label="gap to the bin's mean confidence",
        gid="gap",
    )
    axes.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    axes.set_title(f"ECE = {bins.ece().item():.4f}", fontsize="medium")
    axes.set_aspect("equal")


def bin_opacity(bins: CalibrationBins) -> list[float]:
    """Per bin, 0.2 + 0.8 * count / largest count: a nearly empty bin's bar is faint, as in
    TorchUncertainty's reliability diagrams, so a large gap over a handful of samples does not
    read like a large miscalibration."""
    share = (bins.count / bins.count.max().clamp_min(1)).tolist()
    return [0.2 + 0.8 * value for value in share]


def reliability_diagram(
    bins_by_method: Mapping[str, CalibrationBins],
    histogram: bool = True,
    title: str | None = None,
) -> Figure:
    """Per method a panel: the confidence histogram on top (if `histogram`), the reliability
    diagram below; panels wrap after four per row. Bins come from
    `tradi.metrics.calibration_bins` (or the adaptive bins, or
    `ClassificationMetrics.calibration_bins()` for streamed data); empty bins draw nothing.
    ``title`` (e.g. the data and the seed shown) goes above the panels."""
    check_methods(bins_by_method, "bins_by_method")
    empty = [name for name, bins in bins_by_method.items() if bins.total == 0]
    if empty:
        raise ValueError(f"no samples in the bins of {', '.join(empty)}")
    figure, panels = panel_grid(len(bins_by_method), (3.6, 3.4), 2 if histogram else 1, title)
    for index, ((name, bins), axes) in enumerate(zip(bins_by_method.items(), panels, strict=True)):
        color = method_color(index)
        if histogram:
            _draw_histogram(axes[0], bins, color)
        _draw_reliability(axes[-1], bins, color)
        axes[0].set_title(name if histogram else f"{name}\n{axes[0].get_title()}")
    # one legend for every reliability panel (the same entries), below them: inside a panel
    # it would hide bars
    handles, labels = panels[0][-1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small")
    return figure
