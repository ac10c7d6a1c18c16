"""The runner: results files, interruption and resume, honest scale selection, dense evaluation."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import tradi.experiments.runner as runner
import tradi.training.loop as loop
from tradi.data import Benchmark, TensorSplit
from tradi.experiments import OutputFolderError, config_from_dict, run_experiment
from tradi.experiments._files import write_text_atomic
from tradi.experiments.evaluation import evaluate
from tradi.experiments.pairs import run_pair
from tradi.metrics import classification_metrics, ood_metrics
from tradi.training.checkpoint import save_atomic

# Loop checkpoints per seed: the shared run of mcp, deep_ensembles and tradi (3 epochs), then
# Deep Ensembles' second member (3). Killed in seed 0: in the shared run after its second epoch,
# or in the second member after its second epoch (mcp's pair is then finished).
KILLS = {
    "shared run": (2, [], 1 + 3),
    "second member": (3 + 2, ["mcp"], 1),
}


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config_template: dict[str, Any],
    blobs: Callable[..., Benchmark],
) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("full")
    config = config_from_dict(tiny_config_template)
    results = run_experiment(
        config, out, benchmark=blobs(), progress=False, command="tradi run tiny"
    )
    return results, out


def _metrics_by_pair(results: dict[str, Any]) -> dict[tuple[str, int], Any]:
    return {
        (pair["method"], pair["seed"]): (
            [(row["key"], row["scale"], row["metrics"]) for row in pair["rows"]],
            pair["scale_selection"] and pair["scale_selection"]["points"],
        )
        for pair in results["pairs"]
    }


@pytest.mark.parametrize("kill", sorted(KILLS))
def test_interrupted_run_resumes_to_the_same_results(
    kill: str,
    full_run: tuple[dict[str, Any], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_config: dict[str, Any],
    blobs: Callable[..., Benchmark],
) -> None:
    kill_after, finished, seed_0_epochs = KILLS[kill]
    config = config_from_dict(tiny_config)
    saves = {"count": 0}
    real_save = loop.save_atomic

    def save_then_die(state: dict[str, Any], path: Path) -> None:
        real_save(state, path)
        saves["count"] += 1
        if saves["count"] == kill_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_atomic", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path, benchmark=blobs(), progress=False)
    assert (tmp_path / "state/shared/seed_0/checkpoint.pt").exists()
    done = sorted(p.parent.parent.name for p in tmp_path.glob("state/*/seed_0/result.json"))
    assert done == finished
    monkeypatch.setattr(loop, "save_atomic", real_save)

    trained: list[tuple[int, list[str]]] = []
    epochs = {"count": 0}
    real_run_methods, real_epoch = runner.run_methods, loop._train_one_epoch

    def counting_run_methods(config: Any, seed: int, *args: Any, **kwargs: Any) -> Any:
        trained.append((seed, sorted(args[3])))
        return real_run_methods(config, seed, *args, **kwargs)

    def counting_epoch(*args: Any, **kwargs: Any) -> Any:
        epochs["count"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(runner, "run_methods", counting_run_methods)
    monkeypatch.setattr(loop, "_train_one_epoch", counting_epoch)
    resumed = run_experiment(config, tmp_path, benchmark=blobs(), progress=False, resume=True)

    # Finished pairs are read back; the interrupted run trains only its missing epochs.
    everything = sorted(config.methods)
    unfinished = sorted(set(everything) - set(finished))
    assert trained == [(0, unfinished), (1, everything)]
    assert epochs["count"] == seed_0_epochs + 3 + 3
    assert not (tmp_path / "state/shared/seed_0").exists()
    assert not list(tmp_path.glob("state/*/seed_0/checkpoint"))
    assert _metrics_by_pair(resumed) == _metrics_by_pair(full_run[0])


def test_overwrite_starts_afresh(
    tmp_path: Path,
    tiny_config: dict[str, Any],
    blobs: Callable[..., Benchmark],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tiny_config["methods"] = {"mcp": {}}
    tiny_config["seeds"] = [0]
    stale = tmp_path / "state/mcp/seed_0/result.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("not json")
    config = config_from_dict(tiny_config)
    with pytest.raises(OutputFolderError, match=r"--resume.*--overwrite.*--out"):
        run_experiment(config, tmp_path, benchmark=blobs(), progress=False)
    assert stale.read_text() == "not json"  # refused: nothing deleted
    with caplog.at_level(logging.INFO, logger="tradi"):
        results = run_experiment(
            config, tmp_path, benchmark=blobs(), progress=False, overwrite=True
        )
    assert results["pairs"][0]["method"] == "mcp"
    assert json.loads(stale.read_text())["seed"] == 0
    # the training's header comes before its epoch lines, which carry no method or seed
    messages = [record.getMessage() for record in caplog.records]
    header = messages.index("seed 0: training mcp")
    assert any(m.startswith("epoch 1/") for m in messages[header:])
    assert not any(m.startswith("epoch ") for m in messages[:header])


def test_atomic_writes_keep_the_old_file_when_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    write_text_atomic(target, "old")

    def killed(_: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)  # the kill lands after the data, before the rename
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new, but never completed")
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"x": torch.ones(3)}, tmp_path / "artefacts.pt")
    assert target.read_text() == "old"
    assert not (tmp_path / "artefacts.pt").exists()


def test_results_json_and_csv(full_run: tuple[dict[str, Any], Path]) -> None:
    results, out = full_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))  # what run_experiment returned
    assert on_disk["seeds"] == [0, 1]
    assert on_disk["config"]["methods"]["tradi"]["scale"] == "auto"
    assert on_disk["versions"]["torch"] == torch.__version__
    assert on_disk["command"] == "tradi run tiny"
    passes = {"mcp": 1, "deep_ensembles": 2, "tradi": 4}
    for pair in on_disk["pairs"]:
        assert pair["train_seconds"] > 0
        for row in pair["rows"]:
            assert row["forward_passes"] == passes[pair["method"]]
            assert row["test_seconds"] > 0 and row["build_seconds"] >= 0
            assert set(row["metrics"]) >= {"accuracy", "nll", "ece", "auroc", "fpr95_tpr_in"}
    keys = [row["key"] for row in on_disk["pairs"][2]["rows"]]
    assert keys == ["tradi", "tradi_untuned"]

    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4  # (mcp, deep_ensembles, tradi chosen, tradi untuned) x 2 seeds
    summary = on_disk["summary"]
    for key in ("mcp", "tradi_untuned"):
        values = np.array([float(r["auroc"]) for r in rows if r["key"] == key])
        assert summary[key]["stats"]["auroc"]["mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert summary[key]["stats"]["auroc"]["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)


def test_methods_of_one_seed_share_the_training_trajectory(
    full_run: tuple[dict[str, Any], Path],
) -> None:
    """Tracking does not change training: MCP and TRADI of a seed end at the same network,
    and Deep Ensembles' first member is that network too."""
    pairs = {(p["method"], p["seed"]): p for p in full_run[0]["pairs"]}
    for seed in (0, 1):
        mcp = pairs["mcp", seed]["final_val"][0]
        assert pairs["tradi", seed]["final_val"][0] == mcp
        assert pairs["deep_ensembles", seed]["final_val"][0] == mcp
    assert pairs["mcp", 0]["final_val"] != pairs["mcp", 1]["final_val"]


def test_ood_metrics_agree_with_scikit_learn(full_run: tuple[dict[str, Any], Path]) -> None:
    results, out = full_run
    artefacts = torch.load(out / "state/deep_ensembles/seed_0/artefacts.pt", weights_only=True)
    scores_in = artefacts["deep_ensembles"]["scores_in"].numpy()
    scores_out = artefacts["deep_ensembles"]["scores_out"].numpy()
    assert len(scores_in) == 150 and len(scores_out) == 120
    labels = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
    scores = np.r_[scores_in, scores_out]
    metrics = results["pairs"][1]["rows"][0]["metrics"]
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert metrics["aupr_in"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert metrics["aupr_out"] == pytest.approx(
        average_precision_score(1 - labels, -scores), abs=1e-9
    )


def test_report_has_the_papers_layout_and_figures(full_run: tuple[dict[str, Any], Path]) -> None:
    _, out = full_run
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| method | AUROC"))
    assert "FPR95 % (in-dist. positive)" in header and "pooled ECE (paper's)" in header
    tradi_row = next(line for line in lines if line.startswith("| TRADI (scale chosen on val.)"))
    assert "(96.7)" in tradi_row and "(11.0)" in tradi_row  # the paper's figures beside ours
    assert " ± " in tradi_row  # two seeds: mean ± std
    for figure in ("reliability", "ood_curves", "ood_confidence"):
        assert f"](figures/{figure}.png)" in report
        assert (out / "figures" / f"{figure}.png").stat().st_size > 0
    assert "tradi run tiny" in report and "Versions:" in report and "seeds 0, 1" in report


def test_scale_selection_follows_its_rule(full_run: tuple[dict[str, Any], Path]) -> None:
    results, _ = full_run
    for pair in results["pairs"]:
        choice = pair["scale_selection"]
        if pair["method"] != "tradi":
            assert choice is None
            continue
        points = choice["points"]
        assert choice["rule"] == "nll_tolerance" and all(p["val_auroc"] is None for p in points)
        assert choice["nll_limit"] == pytest.approx(1.2 * choice["reference_nll"])
        for point in points:  # the bound is applied as declared
            assert point["admissible"] == (point["val_nll"] <= choice["nll_limit"])
        within = [p["scale"] for p in points if p["admissible"]]
        over = [p["scale"] for p in points if not p["admissible"]]
        if choice["note"]:  # an end of the range decided
            assert choice["scale"] in (0.1, 100.0)
        else:  # the largest scale within the bound, below the smallest one over it
            assert choice["scale"] == max(s for s in within if s < min(over))
        assert pair["rows"][0]["scale"] == choice["scale"]
        assert pair["rows"][1]["scale"] == 1.0
        assert [row["scale_source"] for row in pair["rows"]] == ["chosen", "untuned"]


def test_the_ood_test_set_never_influences_the_chosen_scale(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    tiny_config["methods"] = {"tradi": tiny_config["methods"]["tradi"]}
    config = config_from_dict(tiny_config)
    base = blobs()
    other = Benchmark(
        **{**base.__dict__, "ood_test": TensorSplit(-base.ood_test.x, base.ood_test.y)}
    )
    choices = []
    for bench, folder in ((base, "a"), (other, "b")):
        result, _ = run_pair(config, "tradi", 0, bench, tmp_path / folder, progress=False)
        choices.append(result["scale_selection"]["points"])
    assert choices[0] == choices[1]


def test_segmentation_is_evaluated_pixelwise() -> None:
    generator = torch.Generator().manual_seed(0)
    n, classes, ood_label, ignore = 6, 3, 3, 255
    labels = torch.randint(0, classes + 1, (n, 5, 4), generator=generator)
    labels[:, 0, 0] = ignore
    # float64: the two passes below average back to it within 1e-16
    logits = 3 * torch.randn(n, classes, 5, 4, generator=generator)
    probs = torch.softmax(logits.double(), dim=1)
    split = TensorSplit(torch.zeros(n, 1, 5, 4), labels)
    bench = Benchmark(
        name="seg",
        task="segmentation",
        train=split,
        val=split,
        test=split,
        ood_test=None,
        ood_val=None,
        num_classes=classes,
        input_shape=(1, 5, 4),
        class_names=("a", "b", "c"),
        ignore_index=ignore,
        ood_label=ood_label,
    )
    batches = [(split.x[i : i + 4], labels[i : i + 4]) for i in range(0, n, 4)]

    # two passes per batch (each a probability map: the OOD scores check them) whose mean is
    # the fixed probability map: p +- d with d_c = p_c (r_c - sum_j p_j r_j) / 2
    r = torch.rand(probs.shape, generator=torch.Generator().manual_seed(1))
    d = probs * (r - (probs * r).sum(dim=1, keepdim=True)) / 2

    def predictor() -> Any:
        return lambda loader: (
            torch.stack([probs[i : i + 4] + d[i : i + 4], probs[i : i + 4] - d[i : i + 4]])
            for i in range(0, n, 4)
        )

    evaluation = evaluate(predictor, bench, batches, None)
    known = labels.masked_fill(labels == ood_label, ignore)
    expected = classification_metrics(probs, known, ignore_index=ignore)
    for key in ("accuracy", "nll", "brier", "ece", "mce"):
        assert evaluation.metrics[key] == pytest.approx(expected[key], abs=1e-9)
    scores = probs.max(dim=1).values
    exact = ood_metrics(scores[known != ignore], scores[labels == ood_label])
    assert evaluation.metrics["auroc"] == pytest.approx(exact["auroc"], abs=1e-4)
    assert evaluation.scores_out is not None
    assert evaluation.scores_out.numel() == int((labels == ood_label).sum())


def test_the_shared_run_gives_each_method_its_separate_run_results(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    """One training run for the seed, shared by every method that trains the same network,
    gives exactly the results of each method trained alone; SWAG with an SWA learning rate
    trains alone, and each method is charged the run minus the other methods' callbacks."""
    tiny_config["seeds"] = [0]
    tiny_config["methods"].update(
        gaussian_perturbation={"scale": "auto", "n_samples": 3},
        mc_dropout={"n_passes": 3},
        swag={"n_samples": 3, "start_epoch": 1, "rank": 2},
        temperature_scaling={},
    )
    config = config_from_dict(tiny_config)
    shared = run_experiment(config, tmp_path / "shared", benchmark=blobs(), progress=False)
    for pair in shared["pairs"]:
        alone, _ = run_pair(
            config, pair["method"], 0, blobs(), tmp_path / pair["method"], progress=False
        )
        assert pair["final_val"] == alone["final_val"], pair["method"]
        # as written to result.json (tuples become lists)
        choices = [json.loads(json.dumps(p["scale_selection"])) for p in (pair, alone)]
        for choice in choices:
            if choice is not None:
                choice["seconds"] = None  # timing, not a result
        assert choices[0] == choices[1], pair["method"]
        for row, row_alone in zip(pair["rows"], alone["rows"], strict=True):
            assert row["scale"] == row_alone["scale"]
            for key, value in row["metrics"].items():
                assert row_alone["metrics"][key] == pytest.approx(value, abs=1e-12), key
        run = pair["training_run"]
        assert run["methods"] == list(config.methods)
        own = pair["train_seconds"] - (run["seconds"] - run["callback_seconds"])
        if pair["method"] in ("tradi", "swag"):  # the only methods with callbacks
            assert 0 < own <= run["callback_seconds"]
        elif pair["method"] != "deep_ensembles":  # which adds its other members' runs
            assert own == pytest.approx(0.0, abs=1e-9)

    tiny_config["methods"]["swag"]["swa_lr"] = 0.005
    tiny_config["methods"] = {k: tiny_config["methods"][k] for k in ("mcp", "swag")}
    results = run_experiment(
        config_from_dict(tiny_config), tmp_path / "swa_lr", benchmark=blobs(), progress=False
    )
    runs = {pair["method"]: pair["training_run"]["methods"] for pair in results["pairs"]}
    assert runs == {"mcp": ["mcp"], "swag": ["swag"]}


def test_a_shared_run_of_other_methods_is_trained_afresh(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    """Its checkpoint holds other callbacks: resuming from it would fail or mislead."""
    tiny_config["methods"] = {"mcp": {}, "tradi": tiny_config["methods"]["tradi"]}
    tiny_config["seeds"] = [0]
    stale = tmp_path / "state/shared/seed_0"
    stale.mkdir(parents=True)
    (stale / "methods.json").write_text('["mcp"]')
    (stale / "checkpoint.pt").write_bytes(b"written with mcp's callbacks alone")
    results = run_experiment(
        config_from_dict(tiny_config), tmp_path, benchmark=blobs(), progress=False, resume=True
    )
    assert [pair["method"] for pair in results["pairs"]] == ["mcp", "tradi"]
    assert not stale.exists()


def test_a_resumed_run_retrains_a_pair_written_by_an_older_method_version(
    tmp_path: Path,
    tiny_config: dict[str, Any],
    blobs: Callable[..., Benchmark],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Deep Ensembles pair of the old member seeds (s, s + 1, ...; result.json without
    ``method_version``) is trained again on --resume; the other methods' pairs are read back."""
    tiny_config["methods"] = {"mcp": {}, "deep_ensembles": {"n_members": 2}}
    tiny_config["seeds"] = [0]
    config = config_from_dict(tiny_config)
    first = run_experiment(config, tmp_path, benchmark=blobs(), progress=False)
    pair = {p["method"]: p for p in first["pairs"]}["deep_ensembles"]
    assert pair["method_version"] == 2 and pair["member_seeds"] == [0, 1_000_000]
    old = tmp_path / "state/deep_ensembles/seed_0/result.json"
    written = json.loads(old.read_text())
    del written["method_version"], written["member_seeds"]  # as an older tradi wrote it
    old.write_text(json.dumps(written))

    trained: list[list[str]] = []
    real_run_methods = runner.run_methods

    def counting_run_methods(config: Any, seed: int, *args: Any, **kwargs: Any) -> Any:
        trained.append(sorted(args[3]))
        return real_run_methods(config, seed, *args, **kwargs)

    monkeypatch.setattr(runner, "run_methods", counting_run_methods)
    with caplog.at_level(logging.WARNING, logger="tradi"):
        resumed = run_experiment(config, tmp_path, benchmark=blobs(), progress=False, resume=True)
    assert trained == [["deep_ensembles"]]
    assert any("version 1 of deep_ensembles, now 2" in r.getMessage() for r in caplog.records)
    assert json.loads(old.read_text())["method_version"] == 2
    assert _metrics_by_pair(resumed) == _metrics_by_pair(first)
