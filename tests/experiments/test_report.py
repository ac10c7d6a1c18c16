"""report.md and its figures: no Python None in the text, the far-OOD figure, reliability
diagrams pooled over seeds, the note on tied scores under the ROC curves."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tradi.experiments.figures as figures
from tradi.data import Benchmark, TensorSplit
from tradi.experiments import config_from_dict, run_experiment
from tradi.experiments.report import report_markdown, split_size, write_outputs
from tradi.experiments.tables import summarize
from tradi.metrics import CalibrationBins, calibration_bins

N_BINS = 15


def _probs(seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    probs = (3 * torch.randn(n, 3, generator=generator, dtype=torch.float64)).softmax(dim=1)
    return probs, torch.randint(0, 3, (n,), generator=generator)


def _bins_json(bins: CalibrationBins) -> dict[str, list[float]]:
    return {f.name: getattr(bins, f.name).tolist() for f in dataclasses.fields(bins)}


def _results(seeds: list[int], ood_val: int | None = None) -> dict[str, Any]:
    """A runner-shaped results dict: MCP only, one row per seed, bins from `_probs(seed)`."""
    pairs = []
    for seed in seeds:
        probs, labels = _probs(seed)
        row = {
            "key": "mcp",
            "label": "Baseline (MCP)",
            "scale": None,
            "scale_source": None,
            "forward_passes": 1,
            "test_seconds": 0.1,
            "build_seconds": 0.0,
            "metrics": {"accuracy": 0.5 + 0.01 * seed, "nll": 1.0, "auroc": 0.8},
            "calibration_bins": _bins_json(calibration_bins(probs, labels, N_BINS)),
        }
        pairs.append(
            {
                "method": "mcp",
                "seed": seed,
                "train_seconds": 1.0,
                "selection_seconds": 0.0,
                "scale_selection": None,
                "rows": [row],
            }
        )
    benchmark = {
        "name": "blobs",
        "task": "classification",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "input_shape": [1, 2, 2],
        "train": 240,
        "val": 90,
        "test": 200,
        "ood_test": 120,
        "ood_val": ood_val,
    }
    config = {
        "name": "tiny",
        "description": "synthetic",
        "benchmark": "blobs",
        "model": {"name": "mlp"},
        "scale_selection": {"rule": "nll_tolerance", "tolerance": 0.1},
    }
    return {
        "config": config,
        "command": "tradi run tiny",
        "seeds": seeds,
        "versions": {"torch": torch.__version__},
        "benchmark": benchmark,
        "pairs": pairs,
    }


def _artefacts(scores_in: torch.Tensor, scores_out: torch.Tensor) -> dict[str, dict[str, Any]]:
    probs, labels = _probs(0)
    bins = _bins_json(calibration_bins(probs, labels, N_BINS))
    tensors = {name: torch.tensor(values) for name, values in bins.items()}
    return {
        "mcp": {
            "bins": tensors,
            "scores_in": scores_in,
            "scores_out": scores_out,
            "scores_far": None,
            "panels": None,
        }
    }


def _numpy_bins(seeds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, summed confidence and correctness of every seed's predictions pooled,
    bins ((m-1)/M, m/M], recomputed with NumPy only."""
    confidence, correct = [], []
    for seed in seeds:
        probs, labels = (t.numpy() for t in _probs(seed))
        confidence.append(probs.max(axis=1))
        correct.append(probs.argmax(axis=1) == labels)
    conf, hit = np.concatenate(confidence), np.concatenate(correct)
    index = np.clip(np.ceil(conf * N_BINS).astype(int) - 1, 0, N_BINS - 1)
    count = np.bincount(index, minlength=N_BINS)
    return (
        count,
        np.bincount(index, weights=conf, minlength=N_BINS),
        np.bincount(index, weights=hit.astype(float), minlength=N_BINS),
    )


def test_an_undeclared_split_reads_none_declared() -> None:
    results = _results([0], ood_val=None)
    text = report_markdown({**results, "summary": summarize(results)}, [])
    data_line = text.splitlines()[2]
    assert "OOD val none declared" in data_line and "None" not in data_line
    assert "OOD test 120" in data_line and "test 200" in data_line
    assert split_size(0) == "0" and split_size(90) == "90"


def test_reliability_bins_are_pooled_over_seeds() -> None:
    """The sum of the seeds' bins against a NumPy recomputation on the pooled predictions
    (counts exact, sums to 1e-9)."""
    seeds = [0, 1, 2]
    pooled = figures.pooled_bins(_results(seeds), "mcp")
    assert pooled is not None
    count, confidence_sum, correct_sum = _numpy_bins(seeds)
    np.testing.assert_array_equal(pooled.count.numpy(), count)
    np.testing.assert_allclose(pooled.confidence_sum.numpy(), confidence_sum, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pooled.correct_sum.numpy(), correct_sum, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pooled.edges.numpy(), np.linspace(0, 1, N_BINS + 1), atol=1e-12)


def test_pooled_bins_need_every_seed_and_equal_edges() -> None:
    results = _results([0, 1])
    del results["pairs"][1]["rows"][0]["calibration_bins"]  # a seed written before the change
    assert figures.pooled_bins(results, "mcp") is None
    results = _results([0, 1])
    results["pairs"][1]["rows"][0]["calibration_bins"]["edges"][3] = 0.25
    with pytest.raises(ValueError, match="different edges"):
        figures.pooled_bins(results, "mcp")


def test_the_reliability_figure_draws_the_pooled_bins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, CalibrationBins] = {}
    draw = figures.reliability_diagram

    def spy(bins: dict[str, CalibrationBins], **kwargs: Any) -> Any:
        drawn.update(bins)
        return draw(bins, **kwargs)

    monkeypatch.setattr(figures, "reliability_diagram", spy)
    results = _results([0, 1])
    write_outputs(results, _artefacts(torch.rand(50), torch.rand(40)), tmp_path)
    (bins,) = drawn.values()
    count, _, correct_sum = _numpy_bins([0, 1])
    np.testing.assert_array_equal(bins.count.numpy(), count)
    np.testing.assert_allclose(bins.correct_sum.numpy(), correct_sum, rtol=0, atol=1e-9)
    report = (tmp_path / "report.md").read_text()
    assert "in-distribution test; seeds 0, 1 pooled" in report
    assert "(seed 0 of 2)" in report  # the OOD curves still show the first seed, and say so


def test_one_seeds_reliability_figure_says_so_without_pooled_bins(tmp_path: Path) -> None:
    results = _results([0, 1])
    del results["pairs"][1]["rows"][0]["calibration_bins"]
    write_outputs(results, _artefacts(torch.rand(50), torch.rand(40)), tmp_path)
    assert "in-distribution test; seed 0 of 2 only" in (tmp_path / "report.md").read_text()


def test_the_roc_caption_explains_tied_scores(tmp_path: Path) -> None:
    """Saturated probabilities: 60% of in-distribution and 30% of OOD scores are exactly 1."""
    scores_in = torch.cat([torch.ones(60), torch.linspace(0.4, 0.9, 40)])
    scores_out = torch.cat([torch.ones(30), torch.linspace(0.3, 0.8, 70)])
    note = figures.tie_note({"TS": (scores_in, scores_out)})
    assert "tied scores" in note and "TS: 45% of the scores equal 1" in note
    untied = figures.tie_note({"MCP": (torch.linspace(0, 1, 100), torch.linspace(0, 0.5, 99))})
    assert "tied scores" in untied and "MCP" not in untied
    write_outputs(_results([0]), _artefacts(scores_in, scores_out), tmp_path)
    report = (tmp_path / "report.md").read_text()
    caption = next(line for line in report.splitlines() if line.startswith("*ROC"))
    assert "straight ROC segment is a run of tied scores" in caption
    assert "MCP: 45% of the scores equal 1" in caption  # the panel label


def test_the_far_ood_set_gets_its_own_roc_figure(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    """The runner keeps the far-OOD scores, so report.md shows their ROC/PR curves beside the
    near-OOD ones; every seed's result rows hold their calibration bins."""
    tiny_config["methods"] = {"mcp": {}}
    tiny_config["train"]["epochs"] = 1
    benchmark = blobs()
    test = benchmark.test
    far = TensorSplit(test.x.min() + test.x.max() - test.x, test.y)
    benchmark = dataclasses.replace(benchmark, far_ood_test=far)
    results = run_experiment(
        config_from_dict(tiny_config), tmp_path, benchmark=benchmark, progress=False
    )
    report = (tmp_path / "report.md").read_text()
    assert "](figures/far_ood_curves.png)" in report and "](figures/ood_curves.png)" in report
    assert (tmp_path / "figures" / "far_ood_curves.png").stat().st_size > 0
    artefacts = torch.load(tmp_path / "state/mcp/seed_0/artefacts.pt", weights_only=True)
    assert artefacts["mcp"]["scores_far"].shape == (len(far),)
    for pair in results["pairs"]:
        bins = pair["rows"][0]["calibration_bins"]
        assert sum(bins["count"]) == len(test)
    assert "seeds 0, 1 pooled" in report
