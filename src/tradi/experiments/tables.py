"""The report's tables: per-seed rows, their summary over seeds, and the markdown tables.

`summarize` gives every numeric figure its mean and sample standard deviation over seeds;
`main_table` lays them out as the paper's table (the paper's figure in brackets); the cost,
noise-scale, every-metric and every-score tables follow it in report.md.

The OOD columns (``auroc``, ``aupr_in``, ..., ``far_auroc``, ...) are those of the config's
``ood_score`` (`table_score`): `flat_rows` takes them from each row's ``ood_scores`` in
results.json, and adds every score's AUROC as ``auroc[<score>]`` (``far_auroc[<score>]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tradi.experiments.paper import PAPER_TABLES, PaperTable
from tradi.experiments.summary import duration
from tradi.methods import METHODS
from tradi.metrics import OOD_SCORES

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
ANOMALY_BENCHMARKS = ("streethazards", "bdd-anomaly")


#: The OOD metrics of one score (`tradi.metrics.ood_metrics`' keys).
_OOD_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95_tpr_in", "fpr95_tpr_out")


def table_score(results: dict[str, Any]) -> str:
    """The OOD score the tables show: the config's ``ood_score`` (``msp`` in results written
    before the key existed, whose OOD metrics are msp's)."""
    return str(results["config"].get("ood_score", "msp"))


def _row_metrics(row: dict[str, Any], score: str) -> dict[str, Any]:
    """A row's metrics with the OOD (and far-OOD) ones of ``score`` (absent where the row has
    not that score, e.g. mutual information for one network), plus every score's AUROC as
    ``auroc[<name>]`` / ``far_auroc[<name>]``. A row written before the per-score metrics
    keeps its own (msp's)."""
    metrics = dict(row["metrics"])
    for prefix, key in (("", "ood_scores"), ("far_", "far_ood_scores")):
        per_score = row.get(key)
        if not per_score:
            continue
        for name in _OOD_KEYS:
            metrics.pop(prefix + name, None)
        metrics.update({prefix + k: v for k, v in per_score.get(score, {}).items()})
        metrics.update({f"{prefix}auroc[{n}]": m["auroc"] for n, m in per_score.items()})
    return metrics


def flat_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (table row, seed) of a results dict with its pair's training figures; the OOD
    metrics of `table_score` (`_row_metrics`)."""
    score = table_score(results)
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
                    **_row_metrics(row, score),
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


def _markdown(header: list[str], lines: Iterable[list[str]]) -> str:
    rows = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main_columns(summary: dict[str, dict[str, Any]], benchmark: str = "") -> tuple[str, ...]:
    """The paper's layout: OOD metrics first when the benchmark has an OOD set; the anomaly
    benchmarks take the anomaly as positive for AUPR and FPR95, as Hendrycks et al. do."""
    present = set().union(*(s["stats"] for s in summary.values()))
    if "miou" in present:
        anomaly = benchmark in ANOMALY_BENCHMARKS
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
        train = duration(stats["train_seconds"]["mean"]) + _paper_value(paper, method, "train_time")
        lines.append([row["label"], *cells, train, duration(stats["test_seconds"]["mean"])])
    return _markdown(header, lines)


def cost_table(summary: dict[str, dict[str, Any]]) -> str:
    """The cost table: mean train and test wall time per row (seconds formatted as ms/s/m/h)
    and as a multiple of MCP's, forward passes per input, and the scale selection's time."""
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
            cells.append(duration(value))
            base = reference["stats"][key]["mean"] if reference else math.nan
            cells.append(f"{value / base:.1f}" if reference and base > 0 else "–")
        cells.append(f"{stats['forward_passes']['mean']:g}")
        cells.append(duration(stats["selection_seconds"]["mean"]))
        lines.append(cells)
    return _markdown(header, lines)


def all_metrics_table(summary: dict[str, dict[str, Any]]) -> str:
    """Every metric any row has (order of `METRIC_FORMATS`), mean ± std over seeds; "–" where
    a row lacks one."""
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


def selection_section(results: dict[str, Any]) -> str:
    """How `auto` scales were chosen: the rule in words, then per (method, seed) with a search
    the chosen scale, the NLL bound and a table of every scale searched (validation data)."""
    selection = results["config"]["scale_selection"]
    rule = _RULES[selection["rule"]].format(tolerance=selection["tolerance"])
    parts = [
        "A scale set to `auto` is a factor of the method's posterior standard deviation, chosen "
        f"on validation data only (never on the OOD test set). Rule `{selection['rule']}`: "
        f"{rule}. The untuned default is reported as its own row. The reference NLL is the "
        "trained network's, or what the method declares in its scale's description (TRADI "
        "modes: its modes without spread); a method with its own rule names it."
    ]
    for pair in results["pairs"]:
        search = pair["scale_selection"]
        if search is None:
            continue
        limit = search["nll_limit"]
        limit_text = f"{limit:.4f}" if limit is not None else "–"
        own_rule = "" if search["rule"] == selection["rule"] else f"rule `{search['rule']}`; "
        parts.append(
            f"\n**{METHODS[pair['method']].label}, seed {pair['seed']}**: chose "
            f"{search['scale']:.3g} (× {METHODS[pair['method']].scale_reference}; {own_rule}"
            f"reference validation NLL {search['reference_nll']:.4f}, bound {limit_text}). "
            f"{search['note'][:1].upper()}{search['note'][1:]}\n"
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


def score_table(summary: dict[str, dict[str, Any]], prefix: str = "") -> str:
    """Every OOD score's AUROC % (mean ± std over seeds) per table row: one column per score
    of `OOD_SCORES` any row has, "–" where a row has not that score. ``prefix`` "far_": the
    far-OOD set's. "" when no row has any score."""
    present = set().union(*(s["stats"] for s in summary.values()))
    names = [n for n in OOD_SCORES if f"{prefix}auroc[{n}]" in present]
    if not names:
        return ""

    def cell(stats: dict[str, Any], name: str) -> str:
        entry = stats.get(f"{prefix}auroc[{name}]")
        if entry is None:
            return "–"
        text = _format(entry["mean"], 100.0, 1)
        return text if entry["std"] is None else f"{text} ± {_format(entry['std'], 100.0, 1)}"

    header = ["method", *(f"`{n}`" for n in names)]
    return _markdown(
        header, ([r["label"], *(cell(r["stats"], n) for n in names)] for r in summary.values())
    )
