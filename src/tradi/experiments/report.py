"""results.json, results.csv, the figures and report.md from the runner's per-pair results.

The report is meant to be looked at: first the table in the paper's layout (ours as mean ± std
over seeds, the paper's figure in brackets), then the figures, the costs, how noise scales were
chosen, every metric, and what is needed to rerun it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import Tensor

from tradi.experiments._files import write_text_atomic
from tradi.experiments.config import recipe_differences
from tradi.experiments.paper import PAPER_TABLES, PaperTable
from tradi.methods import METHODS
from tradi.metrics import CalibrationBins
from tradi.plots import (
    confidence_histograms,
    ood_curves,
    reliability_diagram,
    save_figure,
    segmentation_panels,
)

#: metric key -> (column header, factor, decimals)
METRIC_FORMATS: dict[str, tuple[str, float, int]] = {
    "auroc": ("AUROC %", 100.0, 1),
    "aupr_in": ("AUPR-in %", 100.0, 1),
    "aupr_out": ("AUPR-out %", 100.0, 1),
    "fpr95_tpr_in": ("FPR95 % (in-dist. positive)", 100.0, 1),
    "fpr95_tpr_out": ("FPR95 % (OOD positive)", 100.0, 1),
    "far_auroc": ("far-OOD AUROC %", 100.0, 1),
    "far_fpr95_tpr_in": ("far-OOD FPR95 %", 100.0, 1),
    "ece": ("ECE", 1.0, 4),
    "pooled_ece": ("pooled ECE (paper's)", 1.0, 3),
    "mce": ("MCE", 1.0, 3),
    "adaptive_ece": ("adaptive ECE", 1.0, 4),
    "accuracy": ("accuracy %", 100.0, 2),
    "nll": ("NLL", 1.0, 4),
    "brier": ("Brier", 1.0, 4),
    "miou": ("mIoU %", 100.0, 1),
    "pixel_accuracy": ("pixel acc. %", 100.0, 1),
    "mean_class_accuracy": ("class acc. %", 100.0, 1),
}
_OOD_COLUMNS = (
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr95_tpr_in",
    "far_auroc",
    "far_fpr95_tpr_in",
    "ece",
    "pooled_ece",
    "accuracy",
    "nll",
)
_CLASSIFICATION_COLUMNS = ("nll", "accuracy", "ece", "brier")
#: The paper's CamVid-OOD layout (AUROC / AUPR / FPR95 / ECE), then segmentation quality.
_SEGMENTATION_COLUMNS = ("auroc", "aupr_out", "fpr95_tpr_in", "ece", "miou", "pixel_accuracy")
#: Hendrycks et al.'s anomaly-segmentation layout (StreetHazards, BDD-Anomaly): anomaly positive.
_ANOMALY_COLUMNS = ("auroc", "aupr_out", "fpr95_tpr_out", "ece", "miou", "pixel_accuracy")
_ANOMALY_BENCHMARKS = ("streethazards", "bdd-anomaly")
_CONVENTIONS = (
    "Score: maximum class probability (MCP) of the averaged prediction. AUROC does not depend on "
    "the positive class. AUPR-in: in-distribution positive; AUPR-out: OOD positive (anomaly "
    "benchmarks). FPR95 (slides' convention): share of OOD samples accepted at the threshold "
    "that keeps 95% of the in-distribution samples. ECE: 15 equal-width bins, in-distribution "
    "test data only (the calibration figure). Pooled ECE: the paper's table ECE, in-distribution "
    "and OOD test data pooled with every OOD prediction counted wrong; shown only to compare "
    "with the paper. Far-OOD columns (where the benchmark declares one, e.g. digits: the "
    "in-distribution test images with inverted intensities) beside the benchmark's OOD set."
)
_SEGMENTATION_CONVENTIONS = (
    "Per pixel, accumulated over the whole test set (score histograms and a confusion matrix, "
    "never all pixels at once). Score: maximum class probability (MCP) of the averaged "
    "prediction at each pixel. OOD pixels: the class never trained on (pedestrian); "
    "in-distribution pixels: every known-class pixel; unlabelled pixels count nowhere. AUROC "
    "does not depend on the positive class; AUPR-out: OOD pixels positive; FPR95: share of OOD "
    "pixels accepted at the threshold that keeps 95% of known-class pixels. ECE (15 bins), mIoU "
    "(mean over known classes of TP / (TP + FP + FN)) and pixel accuracy: known-class pixels "
    "only."
)

_ANOMALY_CONVENTIONS = (
    "Anomaly segmentation, Hendrycks et al.'s conventions. Per pixel, accumulated over the whole "
    "test set. Score: maximum class probability (MCP) of the averaged prediction at each pixel. "
    "OOD pixels: the anomaly classes (StreetHazards: the anomaly; BDD-Anomaly: motorcycle and "
    "train), never trained on; in-distribution pixels: every known-class pixel; unlabelled "
    "pixels count nowhere. AUROC does not depend on the positive class; AUPR-out: anomaly "
    "pixels positive; FPR95 (OOD positive): share of known-class pixels flagged as anomalous at "
    "the threshold that flags 95% of the anomaly pixels. ECE (15 bins), mIoU and pixel "
    "accuracy: known-class pixels only."
)


def flat_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (table row, seed) of a results dict with its pair's training figures."""
    rows = []
    for pair in results["pairs"]:
        for row in pair["rows"]:
            rows.append(
                {
                    "key": row["key"],
                    "label": row["label"],
                    "method": pair["method"],
                    "seed": pair["seed"],
                    "scale": row["scale"],
                    "scale_source": row["scale_source"],
                    "train_seconds": pair["train_seconds"],
                    "selection_seconds": pair["selection_seconds"],
                    "test_seconds": row["test_seconds"],
                    "forward_passes": row["forward_passes"],
                    **row["metrics"],
                }
            )
    return rows


def summarize(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per table row (in order of first appearance): label, method, seeds and, for every
    numeric figure, its mean and sample standard deviation over seeds (None for one seed)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in flat_rows(results):
        grouped.setdefault(row["key"], []).append(row)
    summary = {}
    for key, rows in grouped.items():
        stats: dict[str, Any] = {}
        for name, value in rows[0].items():
            if name in (
                "key",
                "label",
                "method",
                "seed",
                "scale",
                "scale_source",
            ) or not isinstance(value, (int, float)):
                continue
            values = np.array([r[name] for r in rows], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            stats[name] = {"mean": float(values.mean()), "std": std}
        summary[key] = {
            "label": rows[0]["label"],
            "method": rows[0]["method"],
            "seeds": [r["seed"] for r in rows],
            "scales": [r["scale"] for r in rows],
            "scale_source": rows[0]["scale_source"],
            "stats": stats,
        }
    return summary


def _format(value: float, factor: float, decimals: int) -> str:
    return f"{value * factor:.{decimals}f}"


def _cell(stats: dict[str, Any], key: str) -> str:
    if key not in stats:
        return "–"
    _, factor, decimals = METRIC_FORMATS[key]
    mean, std = stats[key]["mean"], stats[key]["std"]
    text = _format(mean, factor, decimals)
    return text if std is None else f"{text} ± {_format(std, factor, decimals)}"


def _paper_value(paper: PaperTable | None, method: str, key: str) -> str:
    if paper is None or key not in paper.rows.get(method, {}):
        return ""
    return f" ({paper.rows[method][key]})"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{1000 * seconds:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


def _markdown(header: list[str], lines: Iterable[list[str]]) -> str:
    rows = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main_columns(summary: dict[str, dict[str, Any]], benchmark: str = "") -> tuple[str, ...]:
    """The paper's layout: OOD metrics first when the benchmark has an OOD set; the anomaly
    benchmarks take the anomaly as positive for AUPR and FPR95, as Hendrycks et al. do."""
    present = set().union(*(s["stats"] for s in summary.values()))
    if "miou" in present:
        anomaly = benchmark in _ANOMALY_BENCHMARKS
        columns = _ANOMALY_COLUMNS if anomaly else _SEGMENTATION_COLUMNS
    else:
        columns = _OOD_COLUMNS if "auroc" in present else _CLASSIFICATION_COLUMNS
    return tuple(c for c in columns if c in present)


def main_table(results: dict[str, Any]) -> str:
    """The paper's table: ours mean ± std over seeds, the paper's value in brackets."""
    summary = results["summary"]
    paper = PAPER_TABLES.get(results["config"]["benchmark"])
    columns = main_columns(summary, results["config"]["benchmark"])
    header = ["method", *(METRIC_FORMATS[c][0] for c in columns), "train time", "test time"]
    lines = []
    for row in summary.values():
        stats, method = row["stats"], row["method"]
        cells = [_cell(stats, c) + _paper_value(paper, method, c) for c in columns]
        train = _duration(stats["train_seconds"]["mean"]) + _paper_value(
            paper, method, "train_time"
        )
        lines.append([row["label"], *cells, train, _duration(stats["test_seconds"]["mean"])])
    return _markdown(header, lines)


def recipe_warning(results: dict[str, Any]) -> str:
    """A warning for above the table when the paper's numbers stand beside a run whose recipe
    is not the shipped one ("" otherwise): the comparison would mislead without it."""
    config = results["config"]
    if config["benchmark"] not in PAPER_TABLES:
        return ""
    changes = recipe_differences(config)
    if not changes:
        return ""
    return (
        f"**Warning: not the paper's recipe.** This run differs from the shipped "
        f"`{config['benchmark']}` config that the paper's numbers (in brackets) belong to, so "
        f"the two are not comparable: {'; '.join(changes)}."
    )


def _cost_table(summary: dict[str, dict[str, Any]]) -> str:
    reference = next((s for s in summary.values() if s["method"] == "mcp"), None)
    header = [
        "method",
        "train time",
        "× MCP",
        "test time",
        "× MCP",
        "forward passes / input",
        "scale selection",
    ]
    lines = []
    for row in summary.values():
        stats = row["stats"]
        cells = [row["label"]]
        for key in ("train_seconds", "test_seconds"):
            value = stats[key]["mean"]
            cells.append(_duration(value))
            base = reference["stats"][key]["mean"] if reference else math.nan
            cells.append(f"{value / base:.1f}" if reference and base > 0 else "–")
        cells.append(f"{stats['forward_passes']['mean']:g}")
        cells.append(_duration(stats["selection_seconds"]["mean"]))
        lines.append(cells)
    return _markdown(header, lines)


def _all_metrics_table(summary: dict[str, dict[str, Any]]) -> str:
    present = set().union(*(s["stats"] for s in summary.values()))
    keys = [k for k in METRIC_FORMATS if k in present]
    header = ["method", *(METRIC_FORMATS[k][0] for k in keys)]
    return _markdown(
        header, ([r["label"], *(_cell(r["stats"], k) for k in keys)] for r in summary.values())
    )


_RULES = {
    "nll_tolerance": "the largest scale whose validation NLL is at most (1 + {tolerance}) × the "
    "trained network's own (no OOD data used)",
    "min_nll": "the lowest validation NLL",
    "ood_auroc": "among the scales searched whose validation NLL is at most (1 + {tolerance}) × "
    "the trained network's own, the highest AUROC of validation in-distribution data against "
    "the declared `ood_val` set",
}


def _selection_section(results: dict[str, Any]) -> str:
    selection = results["config"]["scale_selection"]
    rule = _RULES[selection["rule"]].format(tolerance=selection["tolerance"])
    parts = [
        "A scale set to `auto` is a factor of the method's posterior standard deviation, chosen "
        f"on validation data only (never on the OOD test set). Rule `{selection['rule']}`: "
        f"{rule}. The untuned default is reported as its own row."
    ]
    for pair in results["pairs"]:
        search = pair["scale_selection"]
        if search is None:
            continue
        limit = search["nll_limit"]
        limit_text = f"{limit:.4f}" if limit is not None else "–"
        parts.append(
            f"\n**{METHODS[pair['method']].label}, seed {pair['seed']}**: chose "
            f"{search['scale']:.3g} (× {METHODS[pair['method']].scale_reference}; trained "
            f"network's validation NLL {search['reference_nll']:.4f}, bound {limit_text}). "
            f"{search['note']}\n"
        )
        with_auroc = search["rule"] == "ood_auroc"
        lines = [
            [
                f"{p['scale']:.4g}",
                f"{p['val_nll']:.4f}",
                f"{100 * p['val_accuracy']:.2f}",
                *([f"{100 * p['val_auroc']:.2f}"] if with_auroc else []),
                {True: "yes", False: "no", None: "–"}[p["admissible"]],
            ]
            for p in search["points"]
        ]
        auroc_header = ["val. AUROC % (vs ood_val)"] if with_auroc else []
        header = ["scale", "val. NLL", "val. acc. %", *auroc_header, "within bound"]
        parts.append(_markdown(header, lines))
    return "\n".join(parts)


def _figure_label(row: dict[str, Any]) -> str:
    """A panel title short enough for seven panels side by side (first seed's scale)."""
    name = METHODS[row["method"]].short_label
    suffix = {"chosen": " (val.)", "untuned": " (untuned)"}.get(row["scale_source"])
    if suffix is None:
        return name
    return f"{name} ×{row['scales'][0]:.3g}{suffix}"


def _segmentation_figures(
    artefacts: dict[str, dict[str, Any]],
    labels: dict[str, str],
    benchmark: dict[str, Any],
    out_dir: Path,
) -> list[tuple[str, str]]:
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
        figures.append(
            (
                f"Test image {index}: prediction and per-pixel confidence (MCP) of each method; "
                "unseen-class (OOD) pixels outlined, unlabelled pixels black",
                f"figures/{name}.png",
            )
        )
    return figures


def _figures(
    artefacts: dict[str, dict[str, Any]], results: dict[str, Any], out_dir: Path
) -> list[tuple[str, str]]:
    """Draw the figures of the first seed; returns (caption, relative path) pairs."""
    summary = results["summary"]
    labels = {key: _figure_label(summary[key]) for key in summary if key in artefacts}
    if not labels:
        return []
    figures = []
    seed = f"seed {results['seeds'][0]} of {len(results['seeds'])}"
    bins = {labels[k]: CalibrationBins(**artefacts[k]["bins"]) for k in labels}
    reliability = reliability_diagram(bins, title=f"In-distribution test data, {seed}")
    save_figure(reliability, out_dir / "figures" / "reliability")
    figures.append(
        (
            "Reliability diagrams and confidence histograms (in-distribution test)",
            "figures/reliability.png",
        )
    )
    scores: dict[str, tuple[Tensor, Tensor]] = {
        labels[k]: (artefacts[k]["scores_in"], artefacts[k]["scores_out"])
        for k in labels
        if artefacts[k]["scores_out"] is not None and artefacts[k]["scores_out"].numel() > 0
    }
    if scores:
        score = "MCP (max class probability)"
        curves = ood_curves(scores, title=f"OOD detection by the {score}, {seed}")
        save_figure(curves, out_dir / "figures" / "ood_curves")
        figures.append(("ROC and precision-recall curves, MCP score", "figures/ood_curves.png"))
        histograms = confidence_histograms(
            scores, score_name=score, title=f"In-distribution and OOD test data, {seed}"
        )
        save_figure(histograms, out_dir / "figures" / "ood_confidence")
        figures.append(("MCP of in-distribution and OOD test data", "figures/ood_confidence.png"))
    if results["benchmark"]["task"] == "segmentation":
        figures += _segmentation_figures(artefacts, labels, results["benchmark"], out_dir)
    return figures


def _conventions(results: dict[str, Any]) -> str:
    if results["config"]["benchmark"] in _ANOMALY_BENCHMARKS:
        return _ANOMALY_CONVENTIONS
    if results["benchmark"]["task"] == "segmentation":
        return _SEGMENTATION_CONVENTIONS
    return _CONVENTIONS


def _input_size(benchmark: dict[str, Any]) -> str:
    shape = benchmark.get("input_shape")
    return "" if shape is None else "; inputs " + " × ".join(map(str, shape))


def report_markdown(results: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    """The whole report.md."""
    config = results["config"]
    summary = results["summary"]
    paper = PAPER_TABLES.get(config["benchmark"])
    seeds = ", ".join(map(str, results["seeds"]))
    parts = [
        f"# {config['name']}: {config['description'] or config['benchmark']}",
        "",
        f"Benchmark `{config['benchmark']}` ({results['benchmark']['task']}; train "
        f"{results['benchmark']['train']}, val {results['benchmark']['val']}, test "
        f"{results['benchmark']['test']}, OOD test {results['benchmark']['ood_test']}, OOD val "
        f"{results['benchmark']['ood_val']}{_input_size(results['benchmark'])}), model "
        f"`{config['model']['name']}`, seeds {seeds}. "
        "Ours: mean ± std over seeds"
        + (f"; in brackets: the paper ({paper.caption})." if paper else "."),
        "",
        *([warning, ""] if (warning := recipe_warning(results)) else []),
        main_table(results),
        "",
        _conventions(results),
    ]
    if paper and paper.notes:
        parts += ["", *(f"- {note}" for note in paper.notes)]
    for caption, path in figures:
        parts += ["", f"![{caption}]({path})", f"*{caption} (seed {results['seeds'][0]}).*"]
    parts += [
        "",
        "## Cost",
        "",
        "Train time: wall-clock time of every training epoch (all members for Deep Ensembles). "
        "Test time: prediction and metrics over the test and OOD test sets (an ensemble's one-off "
        "build is apart: `build_seconds` in results.json; the chosen scale's ensemble is built by "
        "the scale selection). Scale selection: "
        "time spent choosing a noise scale on validation data (not in the train time). Times are "
        "wall-clock on the machine that ran the experiment; if it was busy with other work, "
        "methods that train the same network (all but Deep Ensembles) differ in train time by "
        "the load of the moment, not by their cost.",
        "",
        _cost_table(summary),
        "",
        "## Noise scales",
        "",
        _selection_section(results),
        "",
        "## Every metric",
        "",
        _all_metrics_table(summary),
        "",
        "## Rerun",
        "",
        f"```\n{results['command'] or 'tradi run <config>'}\n```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
        "Config:",
        "",
        f"```yaml\n{yaml.safe_dump(config, sort_keys=False)}```",
    ]
    return "\n".join(parts) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_outputs(
    results: dict[str, Any], artefacts: dict[str, dict[str, Any]], out_dir: Path
) -> dict[str, Any]:
    """Add the summary to ``results`` and write results.json, results.csv, figures, report.md."""
    results = {**results, "summary": summarize(results)}
    figures = _figures(artefacts, results, out_dir)
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=1))
    write_text_atomic(out_dir / "results.csv", _csv(flat_rows(results)))
    write_text_atomic(out_dir / "report.md", report_markdown(results, figures))
    return results
