"""The report's figures, drawn from the runner's artefacts and results into ``figures/``.

Every writer returns (caption, path relative to the report) pairs; each caption says which
seeds its figure shows. The reliability diagrams pool every seed's calibration bins (the
table shows means over seeds, so one seed's diagram would not match it); the OOD and
segmentation figures show the first seed (scores are not summable across seeds).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tradi.methods import METHODS
from tradi.metrics import CalibrationBins
from tradi.plots import (
    confidence_histograms,
    ood_curves,
    reliability_diagram,
    save_figure,
    segmentation_panels,
)

Figures = list[tuple[str, str]]
ScorePairs = dict[str, tuple[Tensor, Tensor]]

SCORE_NAME = "MCP (max class probability)"
#: A method whose most common score value holds at least this share of its test and OOD
#: scores is named in the ROC caption's note on ties.
TIE_SHARE = 0.05


def figure_label(row: dict[str, Any]) -> str:
    """A panel title short enough for seven panels side by side (first seed's scale)."""
    name = METHODS[row["method"]].short_label
    suffix = {"chosen": " (val.)", "untuned": " (untuned)"}.get(row["scale_source"])
    if suffix is None:
        return name
    return f"{name} ×{row['scales'][0]:.3g}{suffix}"


def pooled_bins(results: dict[str, Any], key: str) -> CalibrationBins | None:
    """The calibration bins of table row ``key`` summed over every seed (per-bin count,
    summed confidence, summed correctness: the bins of all seeds' test predictions pooled,
    float64). None when a seed's row has no ``calibration_bins`` (results written before the
    rows held them); raises ValueError if the seeds' bin edges differ."""
    per_seed = [
        row.get("calibration_bins")
        for pair in results["pairs"]
        for row in pair["rows"]
        if row["key"] == key
    ]
    if not per_seed or any(bins is None for bins in per_seed):
        return None
    edges = torch.tensor(per_seed[0]["edges"], dtype=torch.float64)
    for bins in per_seed[1:]:
        if not torch.equal(torch.tensor(bins["edges"], dtype=torch.float64), edges):
            raise ValueError(f"row {key!r}: the seeds' calibration bins have different edges")

    def total(name: str) -> Tensor:
        return torch.tensor([bins[name] for bins in per_seed], dtype=torch.float64).sum(dim=0)

    return CalibrationBins(edges, total("count"), total("confidence_sum"), total("correct_sum"))


_POOLED_NOTE = (
    ": every seed's per-bin counts, confidences and correct predictions summed, so a panel's "
    "ECE is that of the pooled predictions, not the table's mean over seeds"
)


def _reliability_figure(
    artefacts: Mapping[str, dict[str, Any]],
    results: dict[str, Any],
    labels: dict[str, str],
    out_dir: Path,
) -> tuple[str, str]:
    """Reliability diagrams pooled over seeds, or the first seed's where results lack bins."""
    seeds = results["seeds"]
    pooled = {key: pooled_bins(results, key) for key in labels}
    if all(bins is not None for bins in pooled.values()):
        bins = {labels[k]: b for k, b in pooled.items() if b is not None}
        shown = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {_seed_list(seeds)} pooled"
        note = "" if len(seeds) == 1 else _POOLED_NOTE
    else:
        bins = {labels[k]: CalibrationBins(**artefacts[k]["bins"]) for k in labels}
        shown = f"seed {seeds[0]} of {len(seeds)} only"
        note = ""
    figure = reliability_diagram(bins, title=f"In-distribution test data, {shown}")
    save_figure(figure, out_dir / "figures" / "reliability")
    caption = f"Reliability diagrams and confidence histograms (in-distribution test; {shown})"
    return caption + note, "figures/reliability.png"


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _score_pairs(
    artefacts: Mapping[str, dict[str, Any]], labels: dict[str, str], out_key: str
) -> ScorePairs:
    """{panel label: (scores_in, artefact ``out_key``)} for the rows that have OOD scores
    (artefacts written before far-OOD scores were kept have no ``scores_far``)."""
    return {
        labels[k]: (artefacts[k]["scores_in"], artefacts[k][out_key])
        for k in labels
        if artefacts[k].get(out_key) is not None and artefacts[k][out_key].numel() > 0
    }


def tie_note(scores: ScorePairs) -> str:
    """One sentence on tied scores for the ROC caption: a run of equal scores (saturated
    probabilities, e.g. MCP 1.0 in float32) is one threshold step, which the ROC curve crosses
    as a straight segment. Names each method whose most common score holds at least
    `TIE_SHARE` of its in-distribution and OOD scores together, with that share and value."""
    tied = []
    for name, (scores_in, scores_out) in scores.items():
        values, counts = torch.cat([scores_in.flatten(), scores_out.flatten()]).unique(
            return_counts=True
        )
        share = counts.max().item() / counts.sum().item()
        if share >= TIE_SHARE:
            value = values[counts.argmax()].item()
            tied.append(f"{name}: {100 * share:.0f}% of the scores equal {value:.4g}")
    text = (
        "A straight ROC segment is a run of tied scores, which no threshold can split, so the "
        "curve joins its ends"
    )
    return text + (f" ({'; '.join(tied)})" if tied else "")


def _ood_figures(
    artefacts: Mapping[str, dict[str, Any]], labels: dict[str, str], seed: str, out_dir: Path
) -> Figures:
    """ROC/PR curves and score histograms of the OOD test set; ROC/PR curves of the far-OOD
    set where the benchmark declares one (beside the near-OOD curves, same layout)."""
    figures = []
    near = _score_pairs(artefacts, labels, "scores_out")
    if near:
        curves = ood_curves(near, title=f"OOD detection by the {SCORE_NAME}, {seed}")
        save_figure(curves, out_dir / "figures" / "ood_curves")
        caption = f"ROC and precision-recall curves, MCP score ({seed}). {tie_note(near)}"
        figures.append((caption, "figures/ood_curves.png"))
        histograms = confidence_histograms(
            near, score_name=SCORE_NAME, title=f"In-distribution and OOD test data, {seed}"
        )
        save_figure(histograms, out_dir / "figures" / "ood_confidence")
        caption = f"MCP of in-distribution and OOD test data ({seed})"
        figures.append((caption, "figures/ood_confidence.png"))
    far = _score_pairs(artefacts, labels, "scores_far")
    if far:
        title = f"Far-OOD detection by the {SCORE_NAME}, {seed}"
        save_figure(ood_curves(far, title=title), out_dir / "figures" / "far_ood_curves")
        caption = (
            "ROC and precision-recall curves of the far-OOD test set against the "
            f"in-distribution test data, MCP score ({seed}). {tie_note(far)}"
        )
        figures.append((caption, "figures/far_ood_curves.png"))
    return figures


def _segmentation_figures(
    artefacts: Mapping[str, dict[str, Any]],
    labels: dict[str, str],
    benchmark: dict[str, Any],
    out_dir: Path,
    seed: str,
) -> Figures:
    """One figure per kept test image: the image, its ground truth (OOD pixels outlined), and
    every method's prediction and confidence map side by side (untuned-scale rows left out)."""
    keys = [k for k in labels if artefacts[k].get("panels") is not None]
    keys = [k for k in keys if not k.endswith("_untuned")] or keys
    if not keys:
        return []
    first = artefacts[keys[0]]["panels"]
    num_classes = benchmark["num_classes"]
    figures = []
    for position, index in enumerate(first["index"].tolist()):
        ground_truth = first["labels"][position]
        predictions = {
            labels[k]: (
                artefacts[k]["panels"]["prediction"][position],
                artefacts[k]["panels"]["confidence"][position].float(),
            )
            for k in keys
        }
        figure = segmentation_panels(
            first["image"][position],
            predictions,
            num_classes,
            ground_truth=ground_truth,
            ood_mask=ground_truth == num_classes,
            class_names=benchmark.get("class_names"),
        )
        name = f"segmentation_test_{index}"
        save_figure(figure, out_dir / "figures" / name)
        caption = (
            f"Test image {index}: prediction and per-pixel confidence (MCP) of each method; "
            f"unseen-class (OOD) pixels outlined, unlabelled pixels black ({seed})"
        )
        figures.append((caption, f"figures/{name}.png"))
    return figures


def write_figures(
    artefacts: Mapping[str, dict[str, Any]], results: dict[str, Any], out_dir: Path
) -> Figures:
    """Draw every figure of the report into ``out_dir/figures`` (PNG and SVG); returns
    (caption, relative PNG path) pairs in report order. ``artefacts``: the first seed's
    {row key: {"bins", "scores_in", "scores_out", "scores_far", "panels"}}; ``results``: the
    runner's results with their ``summary`` (`tradi.experiments.tables.summarize`)."""
    summary = results["summary"]
    labels = {key: figure_label(summary[key]) for key in summary if key in artefacts}
    if not labels:
        return []
    seeds = results["seeds"]
    seed = f"seed {seeds[0]}" + (f" of {len(seeds)}" if len(seeds) > 1 else "")
    figures = [_reliability_figure(artefacts, results, labels, out_dir)]
    figures += _ood_figures(artefacts, labels, seed, out_dir)
    if results["benchmark"]["task"] == "segmentation":
        benchmark = results["benchmark"]
        figures += _segmentation_figures(artefacts, labels, benchmark, out_dir, seed)
    return figures
