"""The compact terminal table (`tradi.experiments.summary`) and the torch-free config catalog
(`tradi.experiments.catalog`), checked against hand-computed cells and the typed loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tradi.experiments import ConfigError, load_config
from tradi.experiments.catalog import (
    config_description,
    config_listing,
    config_names,
    config_text,
    read_raw_config,
)
from tradi.experiments.summary import MAX_WIDTH, closing_text, compact_table


def _row(label: str, method: str, **means: float) -> dict[str, Any]:
    return {"label": label, "method": method, "stats": {k: {"mean": v} for k, v in means.items()}}


def _results(benchmark: str = "mnist-notmnist", **rows: dict[str, Any]) -> dict[str, Any]:
    return {"config": {"benchmark": benchmark}, "summary": rows, "seeds": [0, 1, 2]}


COMMON = {"train_seconds": 12.34, "test_seconds": 0.25}


def test_cells_are_the_means_in_the_report_units() -> None:
    results = _results(
        mcp=_row(
            "Baseline (MCP)",
            "mcp",
            accuracy=0.97123,
            nll=0.123456,
            ece=0.01234,
            auroc=0.9512,
            fpr95_tpr_in=0.2346,
            fpr95_tpr_out=0.9,  # not this one: in-distribution positive outside anomaly sets
            **COMMON,
        ),
        tradi=_row("TRADI", "tradi", accuracy=0.5, train_seconds=4000.0, test_seconds=90.0),
    )
    header, mcp, tradi = compact_table(results).splitlines()
    assert header.split() == [
        "method",
        "acc",
        "%",
        "NLL",
        "ECE",
        "AUROC",
        "%",
        "FPR95",
        "%",
        "train",
        "test",
    ]
    assert mcp.split() == [
        "Baseline",
        "(MCP)",
        "97.12",
        "0.1235",
        "0.0123",
        "95.1",
        "23.5",
        "12.3s",
        "250ms",
    ]
    assert tradi.split() == ["TRADI", "50.00", "–", "–", "–", "–", "1.11h", "1.5m"]
    # numbers right-aligned under their headers
    assert len({len(header), len(mcp), len(tradi)}) == 1


def test_anomaly_benchmarks_count_the_anomaly_positive_and_absent_columns_go() -> None:
    results = _results(
        "streethazards",
        mcp=_row("MCP", "mcp", pixel_accuracy=0.9, fpr95_tpr_in=0.1, fpr95_tpr_out=0.3, **COMMON),
    )
    header, row = compact_table(results).splitlines()
    assert "NLL" not in header and "ECE" not in header and "AUROC" not in header
    assert row.split() == ["MCP", "90.00", "30.0", "12.3s", "250ms"]


def test_long_labels_are_shortened_to_the_width() -> None:
    label = "TRADI (kernel covariance, scale selected on validation NLL, " + "x" * 80 + ")"
    metrics = dict(accuracy=0.9, nll=0.3, ece=0.02, auroc=0.9, fpr95_tpr_in=0.3, **COMMON)
    results = _results(a=_row(label, "tradi", **metrics), b=_row("MCP", "mcp", **metrics))
    lines = compact_table(results).splitlines()
    assert max(map(len, lines)) == MAX_WIDTH
    assert lines[1].startswith(label[:20]) and "…" in lines[1]
    assert all(len(line) <= 80 for line in compact_table(results, max_width=80).splitlines())


def test_closing_text_says_where_the_full_report_is() -> None:
    results = _results(mcp=_row("MCP", "mcp", accuracy=0.9, **COMMON))
    text = closing_text(results, Path("runs/x"), "**Warning: not the paper's recipe.** epochs")
    assert text.startswith("Warning: not the paper's recipe. epochs\n")
    assert "means over 3 seeds;" in text and str(Path("runs/x/report.md")) in text
    assert text.endswith(f"results: {Path('runs/x/results.json')}")


def test_catalog_agrees_with_the_typed_loader() -> None:
    folder = Path(__file__).parents[2] / "src" / "tradi" / "experiments" / "configs"
    assert config_names() == sorted(p.stem for p in folder.glob("*.yaml"))
    listing = config_listing().splitlines()
    assert len(listing) == len(config_names())
    for name, line in zip(config_names(), listing, strict=True):
        description = load_config(name).description
        assert config_description(name) == description
        assert line.split(None, 1) == [name, description]
        assert config_text(name)[0] == (folder / f"{name}.yaml").read_text()


def test_raw_config_applies_overrides_and_names_bad_sources(tmp_path: Path) -> None:
    raw = read_raw_config("digits", ["train.epochs=2", "methods.tradi.n_samples=3"])
    assert raw["train"]["epochs"] == 2 and raw["methods"]["tradi"]["n_samples"] == 3
    with pytest.raises(ConfigError, match="neither a config file nor a shipped config; shipped: "):
        read_raw_config("digitz")
    with pytest.raises(ConfigError, match="does not exist"):
        read_raw_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: x\n  bad: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        config_description(tmp_path / "bad.yaml")
