"""results.json, results.csv, the figures and report.md from the runner's per-pair results.

The report is meant to be looked at: first the table in the paper's layout (ours as mean ± std
over seeds, the paper's figure in brackets), then the figures, the costs, how noise scales were
chosen, every metric, and what is needed to rerun it. The tables are built in
`tradi.experiments.tables`, the figures drawn in `tradi.experiments.figures`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from tradi.experiments._files import write_text_atomic
from tradi.experiments.config import recipe_differences
from tradi.experiments.figures import Figures, write_figures
from tradi.experiments.paper import PAPER_TABLES
from tradi.experiments.tables import (
    ANOMALY_BENCHMARKS,
    all_metrics_table,
    cost_table,
    flat_rows,
    main_table,
    score_table,
    selection_section,
    summarize,
    table_score,
)
from tradi.metrics import OOD_SCORES

_CONVENTIONS = (
    "{score} AUROC does not depend on "
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
    "never all pixels at once). {score} Per pixel. OOD pixels: the class never trained on (pedestrian); "
    "in-distribution pixels: every known-class pixel; unlabelled pixels count nowhere. AUROC "
    "does not depend on the positive class; AUPR-out: OOD pixels positive; FPR95: share of OOD "
    "pixels accepted at the threshold that keeps 95% of known-class pixels. ECE (15 bins), mIoU "
    "(mean over known classes of TP / (TP + FP + FN)) and pixel accuracy: known-class pixels "
    "only."
)

_ANOMALY_CONVENTIONS = (
    "Anomaly segmentation, Hendrycks et al.'s conventions. Per pixel, accumulated over the whole "
    "test set. {score} Per pixel. OOD pixels: the anomaly classes (StreetHazards: the anomaly; BDD-Anomaly: motorcycle and "
    "train), never trained on; in-distribution pixels: every known-class pixel; unlabelled "
    "pixels count nowhere. AUROC does not depend on the positive class; AUPR-out: anomaly "
    "pixels positive; FPR95 (OOD positive): share of known-class pixels flagged as anomalous at "
    "the threshold that flags 95% of the anomaly pixels. ECE (15 bins), mIoU and pixel "
    "accuracy: known-class pixels only."
)


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


def score_sentence(results: dict[str, Any]) -> str:
    """Which OOD score the tables show (the config's ``ood_score``), what it computes, and
    where every other score is."""
    name = table_score(results)
    spec = OOD_SCORES[name]
    paper = " (the paper's score: maximum class probability, MCP)" if name == "msp" else ""
    return (
        f"Score (config `ood_score`, default `msp`): `{name}` = {spec.formula}{paper}, "
        "higher = more in-distribution (z_s: sample s's logits, p: the averaged prediction; "
        "docs/ood-scores.md). "
        "Every score's AUROC, AUPR-in, AUPR-out and FPR95 is in results.json (`ood_scores` of "
        "each row; their AUROC in the OOD scores section below)."
    )


def _conventions(results: dict[str, Any]) -> str:
    if results["config"]["benchmark"] in ANOMALY_BENCHMARKS:
        text = _ANOMALY_CONVENTIONS
    elif results["benchmark"]["task"] == "segmentation":
        text = _SEGMENTATION_CONVENTIONS
    else:
        text = _CONVENTIONS
    return text.format(score=score_sentence(results))


def _input_size(benchmark: dict[str, Any]) -> str:
    shape = benchmark.get("input_shape")
    return "" if shape is None else "; inputs " + " × ".join(map(str, shape))


#: The benchmark's splits as report.md's first line names them: (words, results key).
_SPLITS = (
    ("train", "train"),
    ("val", "val"),
    ("test", "test"),
    ("OOD test", "ood_test"),
    ("OOD val", "ood_val"),
)
_COST_TEXT = (
    "Train time: wall-clock time of every training epoch (all members for Deep Ensembles). "
    "Test time: prediction and metrics over the test and OOD test sets (an ensemble's one-off "
    "build is apart: `build_seconds` in results.json; the chosen scale's ensemble is built by "
    "the scale selection). Scale selection: "
    "time spent choosing a noise scale on validation data (not in the train time). Times are "
    "wall-clock on the machine that ran the experiment; if it was busy with other work, "
    "methods that train the same network (all but Deep Ensembles) differ in train time by "
    "the load of the moment, not by their cost."
)


def split_size(count: int | None) -> str:
    """A split's size in words: a split the benchmark does not declare (None in results'
    ``benchmark``, e.g. no ``ood_val``) reads "none declared", never Python's ``None``."""
    return "none declared" if count is None else str(count)


def _data_line(results: dict[str, Any]) -> str:
    """The line under the title: benchmark, split sizes, input size, model, seeds."""
    config, benchmark = results["config"], results["benchmark"]
    paper = PAPER_TABLES.get(config["benchmark"])
    splits = ", ".join(f"{words} {split_size(benchmark.get(key))}" for words, key in _SPLITS)
    return (
        f"Benchmark `{config['benchmark']}` ({benchmark['task']}; {splits}"
        f"{_input_size(benchmark)}), model `{config['model']['name']}`, seeds "
        f"{', '.join(map(str, results['seeds']))}. Ours: mean ± std over seeds"
        + (f"; in brackets: the paper ({paper.caption})." if paper else ".")
    )


def _head(results: dict[str, Any]) -> list[str]:
    """Title, data line, the recipe warning if any, the main table, conventions, paper notes."""
    config = results["config"]
    paper = PAPER_TABLES.get(config["benchmark"])
    warning = recipe_warning(results)
    return [
        f"# {config['name']}: {config['description'] or config['benchmark']}",
        "",
        _data_line(results),
        "",
        *([warning, ""] if warning else []),
        main_table(results),
        "",
        _conventions(results),
        *(["", *(f"- {note}" for note in paper.notes)] if paper and paper.notes else []),
    ]


def _figure_lines(figures: Figures) -> list[str]:
    """Each figure as an image (alt text: the caption's first sentence) and its whole caption
    in italics (the caption names its seeds)."""
    return [
        line
        for caption, path in figures
        for line in ("", f"![{caption.split('. ')[0]}]({path})", f"*{caption}.*")
    ]


_SCORES_TEXT = (
    "AUROC % of every OOD score the method's outputs allow (mean ± std over seeds); the tables "
    "above show `{score}`. All of them are oriented higher = more in-distribution. A score "
    "that needs an ensemble (mutual_information, variation_ratio, variance) is constant for "
    "one network and left out (–); each row's `ood_scores_left_out` in results.json says "
    "why. AUPR-in, AUPR-out and FPR95 of every score: `ood_scores` in results.json."
)


def _score_lines(results: dict[str, Any]) -> list[str]:
    """The OOD scores section: every score's AUROC per row (and the far-OOD set's)."""
    summary = results["summary"]
    near, far = score_table(summary), score_table(summary, "far_")
    if not near and not far:
        return []
    text = _SCORES_TEXT.format(score=table_score(results))
    lines = ["", "## OOD scores", "", text, "", near]
    return lines + (["", "Far-OOD set:", "", far] if far else [])


def _sections(results: dict[str, Any]) -> list[str]:
    """OOD scores, cost, noise scales, every metric, and how to rerun (command, versions,
    config)."""
    summary = results["summary"]
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    return [
        *_score_lines(results),
        *("", "## Cost", "", _COST_TEXT, "", cost_table(summary)),
        *("", "## Noise scales", "", selection_section(results)),
        *("", "## Every metric", "", all_metrics_table(summary)),
        *("", "## Rerun", "", _rerun(results)),
        *("", f"Versions: {versions}", "", "Config:", ""),
        f"```yaml\n{yaml.safe_dump(results['config'], sort_keys=False)}```",
    ]


def _rerun(results: dict[str, Any]) -> str:
    """The command again, with what it does to this folder (a finished run is never replaced
    silently: `tradi.experiments.rundir`)."""
    command = results["command"] or "tradi run <config>"
    return (
        f"```\n{command} --resume     # continue, or redo nothing if finished\n"
        f"{command} --overwrite  # from scratch: replaces this folder's results\n```"
    )


def report_markdown(results: dict[str, Any], figures: Figures) -> str:
    """The whole report.md: ``results`` with its ``summary``, ``figures`` the (caption,
    relative path) pairs of `tradi.experiments.figures.write_figures`."""
    return "\n".join([*_head(results), *_figure_lines(figures), *_sections(results)]) + "\n"


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
    figures = write_figures(artefacts, results, out_dir)
    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=1))
    write_text_atomic(out_dir / "results.csv", _csv(flat_rows(results)))
    write_text_atomic(out_dir / "report.md", report_markdown(results, figures))
    return results
