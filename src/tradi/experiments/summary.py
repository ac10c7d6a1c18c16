"""The compact results table that `tradi run` prints to the terminal (at most 100 columns).

The paper's table in report.md has up to 13 columns of mean ± std with the paper's value beside
each, unreadable in an 80-column terminal (issue 21). The terminal gets the headline instead:
per row the method, accuracy, NLL, ECE, AUROC, FPR95 and the cost (train and test time), means
over seeds only; report.md keeps the full table. AUROC and FPR95 are those of the config's
``ood_score`` (the summary's, `tradi.experiments.tables.flat_rows`), named under the table. Built from the ``summary`` of results.json
(`tradi.experiments.report.summarize`), so it needs neither torch nor the report module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The widest line printed; a longer method label is shortened with "…".
MAX_WIDTH = 100
#: Anomaly-segmentation benchmarks (Hendrycks et al.) count the anomaly as positive in FPR95,
#: as their table in report.md does; the others the in-distribution samples (the slides').
_ANOMALY_BENCHMARKS = ("streethazards", "bdd-anomaly")
_GAP = "  "


def _columns(benchmark: str) -> list[tuple[str, tuple[str, ...], float, int]]:
    """(header, metric keys in order of preference, factor, decimals) per metric column."""
    fpr95 = ("fpr95_tpr_out", "fpr95_tpr_in")
    if benchmark not in _ANOMALY_BENCHMARKS:
        fpr95 = fpr95[::-1]
    return [
        ("acc %", ("accuracy", "pixel_accuracy"), 100.0, 2),
        ("NLL", ("nll",), 1.0, 4),
        ("ECE", ("ece",), 1.0, 4),
        ("AUROC %", ("auroc",), 100.0, 1),
        ("FPR95 %", fpr95, 100.0, 1),
    ]


def duration(seconds: float) -> str:
    """``850ms``, ``12.3s``, ``4.5m``, ``1.25h`` (the units of report.md's cost table)."""
    if seconds < 1:
        return f"{1000 * seconds:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


def _mean(stats: dict[str, Any], key: str) -> float | None:
    entry = stats.get(key)
    return None if entry is None or entry.get("mean") is None else float(entry["mean"])


def _rows(summary: dict[str, dict[str, Any]], benchmark: str) -> tuple[list[str], list[list[str]]]:
    """The header and the cells of each row; a metric no row has is left out."""
    header, lines = ["method"], [[str(row["label"])] for row in summary.values()]
    for title, keys, factor, decimals in _columns(benchmark):
        key = next((k for k in keys if any(k in r["stats"] for r in summary.values())), None)
        if key is None:
            continue
        header.append(title)
        for cells, row in zip(lines, summary.values(), strict=True):
            value = _mean(row["stats"], key)
            cells.append("–" if value is None else f"{value * factor:.{decimals}f}")
    header += ["train", "test"]
    for cells, row in zip(lines, summary.values(), strict=True):
        for key in ("train_seconds", "test_seconds"):
            value = _mean(row["stats"], key)
            cells.append("–" if value is None else duration(value))
    return header, lines


def compact_table(results: dict[str, Any], max_width: int = MAX_WIDTH) -> str:
    """A plain-text table of ``results["summary"]``, one row per table row of report.md.

    Columns: method, acc % (``accuracy``, or ``pixel_accuracy`` for segmentation), NLL, ECE,
    AUROC %, FPR95 % (in-distribution positive; anomaly positive on StreetHazards and
    BDD-Anomaly), train and test time: means over seeds, numbers right-aligned. No line is
    longer than ``max_width`` characters: method labels are shortened with "…" when needed.
    Raises `KeyError` if ``results`` lacks ``summary`` or ``config.benchmark``.
    """
    header, lines = _rows(results["summary"], results["config"]["benchmark"])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    others = sum(widths[1:]) + len(_GAP) * (len(widths) - 1)
    widths[0] = max(len(header[0]), min(widths[0], max_width - others))
    text = []
    for row in [header, *lines]:
        label = row[0] if len(row[0]) <= widths[0] else row[0][: widths[0] - 1] + "…"
        cells = [label.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        text.append(_GAP.join(cells).rstrip())
    return "\n".join(text)


def _paper_part(results: dict[str, Any]) -> str:
    """ ", beside the paper's numbers" where the paper has a table for this benchmark."""
    from tradi.experiments.paper import PAPER_TABLES  # torch-free: plain data

    benchmark = results.get("benchmark", {})
    name = benchmark.get("name") if isinstance(benchmark, dict) else None
    return " beside the paper's numbers" if name in PAPER_TABLES else ""


def closing_text(results: dict[str, Any], out: Path, warning: str = "") -> str:
    """What `tradi run` prints when done: ``warning`` (markdown bold removed; the report's
    "not the paper's recipe" warning, if any), the compact table, and where the full report
    and the results are."""
    seeds = len(results.get("seeds") or ()) or 1
    means = f"means over {seeds} seeds; " if seeds > 1 else ""
    lines = [warning.replace("**", "") + "\n"] if warning else []
    score = results.get("config", {}).get("ood_score", "msp")
    lines += [
        compact_table(results),
        f"AUROC and FPR95 of the OOD score {score!r} (config ood_score; every score's: "
        "report.md, results.json)",
        f"\n{means}every metric, mean ± std{_paper_part(results)}: {out / 'report.md'}",
        f"results: {out / 'results.json'}",
    ]
    return "\n".join(lines)


__all__ = ["MAX_WIDTH", "closing_text", "compact_table"]
