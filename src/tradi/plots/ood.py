"""OOD detection figures: ROC and precision-recall curves, score histograms in vs. OOD."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from tradi.metrics import ood_metrics, ood_pr_curve, ood_roc_curve
from tradi.metrics._checks import check_scores
from tradi.metrics.ood import TPR_LEVEL
from tradi.plots._figure import check_methods, method_color, new_figure, panel_grid

ScorePair = tuple[Tensor, Tensor]


def ood_curves(scores_by_method: Mapping[str, ScorePair], title: str | None = None) -> Figure:
    """ROC, PR with in-distribution positive and PR with OOD positive, every method on each
    axis, its AUROC / AUPR in the legend. Scores (in, out): higher = more in-distribution.
    PR curves are drawn as the steps that average precision sums. Every distinct score is a
    point: subsample very large sets (pixels) before plotting. ``title`` (the score, the seed)
    goes above the panels."""
    check_methods(scores_by_method, "scores_by_method")
    # taller with more methods: each panel's legend sits below it
    figure, axes = new_figure(1, 3, (4.0, 3.8 + 0.2 * len(scores_by_method)))
    if title:
        figure.suptitle(title)
    roc_axes, pr_in_axes, pr_out_axes = axes[0]
    for index, (name, (scores_in, scores_out)) in enumerate(scores_by_method.items()):
        color = method_color(index)
        metrics = ood_metrics(scores_in, scores_out)
        fpr, tpr, _ = ood_roc_curve(scores_in, scores_out)
        roc_axes.plot(
            fpr.numpy(force=True),
            tpr.numpy(force=True),
            color=color,
            label=f"{name} (AUROC {100 * metrics['auroc']:.1f})",
        )
        for axis, positive, key in (
            (pr_in_axes, "in", "aupr_in"),
            (pr_out_axes, "out", "aupr_out"),
        ):
            precision, recall, _ = ood_pr_curve(scores_in, scores_out, positive=positive)
            axis.plot(
                recall.numpy(force=True),
                precision.numpy(force=True),
                color=color,
                drawstyle="steps-pre",
                label=f"{name} (AUPR {100 * metrics[key]:.1f})",
            )
    _label_axes(roc_axes, pr_in_axes, pr_out_axes)
    return figure


def _label_axes(roc_axes: Axes, pr_in_axes: Axes, pr_out_axes: Axes) -> None:
    """The chance line, the 95% TPR level, titles, limits and each panel's legend."""
    roc_axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8)
    roc_axes.axhline(TPR_LEVEL, color="gray", linestyle=":", linewidth=0.8)
    roc_axes.set(
        xlabel="FPR (OOD accepted)",
        ylabel="TPR (in-distribution accepted)",
        title="ROC, in-distribution positive",
    )
    pr_in_axes.set(xlabel="recall", ylabel="precision", title="PR, in-distribution positive")
    pr_out_axes.set(xlabel="recall", ylabel="precision", title="PR, OOD positive")
    for axis in (roc_axes, pr_in_axes, pr_out_axes):
        axis.set(xlim=(0, 1), ylim=(0, 1.02))
        # below the panel, not on it: with ten methods a legend inside covers the curves
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="small")


def confidence_histograms(
    scores_by_method: Mapping[str, ScorePair],
    n_bins: int = 50,
    score_range: tuple[float, float] | None = (0.0, 1.0),
    log_y: bool = False,
    score_name: str = "score",
    title: str | None = None,
) -> Figure:
    """One panel per method (four per row, then wrapped): the share of in-distribution and of
    OOD samples per score bin on shared edges (each set sums to 1, so unequal set sizes
    compare). `score_range=None` spans each method's own scores (for entropies and other scores
    outside [0, 1]); scores outside the range are counted in the end bins. ``score_name``
    labels the x axis (e.g. "MCP (max class probability)"); ``title`` goes above the panels."""
    check_methods(scores_by_method, "scores_by_method")
    figure, panels = panel_grid(len(scores_by_method), (3.6, 3.0), title=title)
    for (name, (scores_in, scores_out)), (axis,) in zip(
        scores_by_method.items(), panels, strict=True
    ):
        scores_in = check_scores(scores_in, f"{name}: scores_in").cpu()
        scores_out = check_scores(scores_out, f"{name}: scores_out").cpu()
        if score_range is None:
            both = torch.cat([scores_in, scores_out])
            low, high = both.min().item(), both.max().item()
            high = high if high > low else low + 1.0
        else:
            low, high = score_range
        edges = torch.linspace(low, high, n_bins + 1, dtype=torch.float64)
        for scores, label, color in (
            (scores_in, "in-distribution", "tab:blue"),
            (scores_out, "OOD", "tab:orange"),
        ):
            counts = torch.histogram(scores.clamp(low, high), bins=edges).hist
            axis.stairs(
                (counts / scores.numel()).numpy(force=True),
                edges.numpy(force=True),
                fill=True,
                alpha=0.5,
                color=color,
                label=f"{label} (n={scores.numel()})",
            )
        axis.set(title=name, xlabel=score_name, ylabel="share of samples", xlim=(low, high))
        if log_y:
            axis.set_yscale("log")
        axis.legend(loc="upper left", fontsize="small")
    return figure
