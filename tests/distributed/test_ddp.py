"""Two gloo processes on the CPU: trackers identical across ranks and equal to one process over
the same global batches (DDP), or following each rank's shard (FSDP2); evaluation reduced
exactly, one rank writing, and a failing rank failing the whole run instead of hanging."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from tradi.inference.ensemble import SampledEnsemble
from tradi.metrics import ClassificationMetrics, OODMetrics, classification_metrics, ood_metrics

HERE = Path(__file__).parent
WORKERS = HERE / "_workers.py"
# A limit only catches a hang: starting two processes takes seconds on idle cores and a minute
# or more on a busy machine (measured: 69 s at load 5-6 for a runner test), which is no failure.
RUN_LIMIT_S = 600
# DDP sums the two ranks' mean gradients and halves them; one process takes the mean over the
# whole batch: the same number up to float32 rounding, which momentum carries over the steps.
FLOAT32_STEPS = {"rtol": 1e-5, "atol": 1e-6}


def load_workers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddp_workers", WORKERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workers = load_workers()


def run_scenario(
    scenario: str, out: Path, *, torchrun: bool = False
) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        if torchrun
        else [sys.executable]
    )
    return subprocess.run(
        [*launcher, str(WORKERS), scenario, str(out)],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        check=False,
    )


def load_ranks(folder: Path) -> list[dict[str, Any]]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def launched(session_folder: Path) -> Path:
    """One 2-process run through `tradi.distributed.launch`: DDP training, evaluation, FSDP2.

    Shared by the pytest-xdist workers (a lock in their common temporary folder), so that the
    run happens once however the tests are distributed.
    """
    shared = session_folder
    out = shared / "ddp_launched"
    with FileLock(shared / "ddp_launched.lock"):
        if not (out / "done").exists():
            out.mkdir(exist_ok=True)
            done = run_scenario("all", out)
            assert done.returncode == 0, done.stderr[-3000:]
            (out / "done").touch()
    return out


@pytest.fixture(scope="module")
def single_process() -> dict[str, Any]:
    """The same training in this process, with one DataLoader over the global batches."""
    loader = DataLoader(
        workers.training_data(),
        workers.GLOBAL_BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(5),
    )
    callbacks, model, _ = workers.train(workers.tiny_model(), loader)
    tracker = callbacks[0].tracker
    ensemble = SampledEnsemble(model, tracker.posterior("kernel", scale=3.0), 4, seed=2)
    return {
        "delta": tracker.state_dict(),
        "gradient": callbacks[1].tracker.state_dict(),
        "weights": model.state_dict(),
        "batches_per_epoch": len(loader),
        "mean": tracker.mean(),
        "variance": tracker.variance(),
        "gradient_variance": callbacks[1].tracker.variance(),
        "probs": ensemble(workers.ensemble_inputs()),
    }


def assert_same_tracker(a: dict[str, Any], b: dict[str, Any], **tolerance: float) -> None:
    assert a["names"] == b["names"]
    assert a["num_updates"] == b["num_updates"]
    assert a["p_mean"] == b["p_mean"] and a["p_var"] == b["p_var"]
    for key in ("mean", "variance", "previous"):
        if a[key] is None:
            assert b[key] is None
        else:
            torch.testing.assert_close(a[key], b[key], **tolerance)


def test_trackers_are_bitwise_identical_across_ranks(launched: Path) -> None:
    rank0, rank1 = load_ranks(launched / "train")
    for step_form in ("delta", "gradient"):
        assert_same_tracker(rank0[step_form], rank1[step_form], rtol=0, atol=0)
    for name, tensor in rank0["weights"].items():
        assert torch.equal(tensor, rank1["weights"][name])


def test_trackers_equal_one_process_over_the_same_global_batch(
    launched: Path, single_process: dict[str, Any]
) -> None:
    rank0, _ = load_ranks(launched / "train")
    assert rank0["batches_per_epoch"] == single_process["batches_per_epoch"] == 5  # 72 / 16
    for step_form in ("delta", "gradient"):
        tracker = rank0[step_form]
        assert tracker["num_updates"] == workers.EPOCHS * 5
        # names are the model's own, not DDP's "module.*"
        assert tracker["names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert_same_tracker(tracker, single_process[step_form], **FLOAT32_STEPS)
    for name, tensor in single_process["weights"].items():
        torch.testing.assert_close(rank0["weights"][name], tensor, **FLOAT32_STEPS)


def test_only_rank_zero_writes(launched: Path) -> None:
    written = sorted(p.name for p in (launched / "train").glob("written_by_rank*"))
    assert written == ["written_by_rank0.txt"]


def test_rank_zero_alone_claims_the_output_folder_and_every_rank_gets_its_verdict(
    launched: Path,
) -> None:
    ranks = [json.loads((launched / "folder" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["lock"] == ranks[1]["lock"]
    assert ranks[0]["lock"]["pid"] == ranks[0]["pid"] != ranks[1]["pid"]  # rank 0 holds it
    # the refusal was decided on rank 0 and raised on both: neither entered, neither hung
    assert "entered" not in ranks[0] and "entered" not in ranks[1]
    assert ranks[0]["refused"] == ranks[1]["refused"]
    assert (
        f"{launched / 'folder' / 'fresh'} holds another run (results.json)" in ranks[1]["refused"]
    )
    assert not (launched / "folder" / "fresh" / "run.lock").exists()


def test_torchrun_command_line_gives_the_launcher_result(launched: Path, tmp_path: Path) -> None:
    done = run_scenario("train", tmp_path, torchrun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    by_torchrun, by_launch = load_ranks(tmp_path), load_ranks(launched / "train")
    for rank in range(2):
        for step_form in ("delta", "gradient"):
            assert_same_tracker(
                by_torchrun[rank][step_form], by_launch[rank][step_form], rtol=0, atol=0
            )


def test_gathered_predictions_are_the_dataset_in_order(launched: Path) -> None:
    probs, labels, _ = workers.evaluation_data()
    ranks = load_ranks(launched / "metrics")
    assert [r["local_count"] for r in ranks] == [52, 51]  # contiguous, no padding
    for result in ranks:
        assert torch.equal(result["probs"], probs)
        assert torch.equal(result["labels"], labels)
        expected = classification_metrics(probs, labels)
        assert classification_metrics(result["probs"], result["labels"]) == expected


def test_streaming_metrics_reduce_to_the_single_process_values(launched: Path) -> None:
    probs, labels, ood_scores = workers.evaluation_data()
    classification, ood = ClassificationMetrics(), OODMetrics()
    classification.update(probs, labels)
    ood.update(probs.amax(1), False)
    ood.update(ood_scores, True)
    expected_classification, expected_ood = classification.compute(), ood.compute()
    # the OOD states are integer counts: exact; the calibration states are float64 sums taken
    # in another order: equal to rounding
    exact_ood = ood_metrics(probs.amax(1), ood_scores)
    for result in load_ranks(launched / "metrics"):
        assert result["ood"] == expected_ood
        # and, like one process's, within the histogram's bound of the sort-based metric
        bound = ood.error_bounds()["auroc"]
        assert abs(result["ood"]["auroc"] - exact_ood["auroc"]) <= bound + 1e-12
        assert bound < 1e-3
        assert result["classification"].keys() == expected_classification.keys()
        for key, value in expected_classification.items():
            assert result["classification"][key] == pytest.approx(value, rel=1e-12, abs=1e-15)
        nll = -probs.gather(1, labels[:, None]).log().sum()
        assert result["sums"]["count"] == 103
        assert result["sums"]["nll_sum"] == pytest.approx(float(nll), rel=1e-12)


def test_streamed_segmentation_evaluation_of_two_blocks_is_the_single_process_one(
    launched: Path,
) -> None:
    """Each rank evaluates its block of the test images (7 + 6, batches of 4); the metrics
    reduce over the ranks, the figure pixels and panels gather in order: one process's."""
    from tradi.experiments.evaluation import evaluate
    from tradi.experiments.loaders import TensorBatches

    benchmark = workers.segmentation_benchmark()
    one = evaluate(
        workers.segmentation_predictor, benchmark, TensorBatches(benchmark.test, 4), None
    )
    ranks = load_ranks(launched / "segmentation")
    assert [r["local_images"] for r in ranks] == [7, 6]
    assert one.panels is not None and len(one.panels["index"]) == 3
    for result in ranks:
        assert result["metrics"].keys() == one.metrics.keys()
        # float64 sums in another order, of float32 per-pixel terms that this process may
        # compute with several threads while each rank uses one: 4e-9 apart measured without
        # OMP_NUM_THREADS=1 (make test sets it), so 1e-6 (a wrong reduction is off by far more)
        for key, value in one.metrics.items():
            assert result["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
        assert torch.equal(result["scores_in"], one.scores_in)
        assert torch.equal(result["scores_out"], one.scores_out)
        for key, value in one.panels.items():
            assert torch.equal(result["panels"][key], value), key


def test_a_failing_rank_fails_the_run_with_its_error(tmp_path: Path) -> None:
    done = run_scenario("fail", tmp_path)  # a hang would raise TimeoutExpired
    assert done.returncode != 0
    assert "DistributedRunError: rank 1 of 2 failed first" in done.stderr
    assert "rank one broke on purpose" in done.stderr


def test_fsdp2_trackers_follow_the_local_shards_and_gather_for_prediction(
    launched: Path, single_process: dict[str, Any]
) -> None:
    ranks = load_ranks(launched / "fsdp")
    # each rank tracks its rows of every parameter (dim 0: 16 -> 8 + 8, 3 -> 2 + 1) ...
    assert ranks[0]["local_mean"]["2.weight"].shape == (2, 16)
    assert ranks[1]["local_mean"]["2.weight"].shape == (1, 16)
    for key, reference in (
        ("local_mean", "mean"),
        ("local_variance", "variance"),
        ("gradient_local_variance", "gradient_variance"),
    ):
        for name, expected in single_process[reference].items():
            joined = torch.cat([ranks[0][key][name], ranks[1][key][name]])
            torch.testing.assert_close(joined, expected, **FLOAT32_STEPS)
    # ... and sampling and prediction see whole tensors, the same on both ranks
    for result in ranks:
        for name, expected in single_process["mean"].items():
            torch.testing.assert_close(result["gathered_mean"][name], expected, **FLOAT32_STEPS)
        for name, expected in single_process["weights"].items():
            torch.testing.assert_close(result["weights"][name], expected, **FLOAT32_STEPS)
        torch.testing.assert_close(result["probs"], single_process["probs"], rtol=1e-4, atol=1e-5)
    assert torch.equal(ranks[0]["probs"], ranks[1]["probs"])
