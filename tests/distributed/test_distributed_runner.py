"""`tradi run CONFIG --nproc 2` (and the same under torchrun) on two gloo processes: the
results equal one process's, rank 0 alone writes, and a failing rank fails the run by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

# A limit only catches a hang: a run below takes about 10 s on 2 idle cores, but measured 69 s
# (34 s before its first log line) at load 5-6, and a wait on a busy machine is no failure.
RUN_LIMIT_S = 600

# The embedded digits (no data files), a one-hidden-layer MLP (Linear -> BatchNorm1d -> ReLU)
# without dropout: dropout masks are drawn per rank and would differ from one process's by
# design. 509 training images in global batches of 32: the last one (29) splits 15 + 14.
CONFIG = """\
name: digits-ddp
description: tiny digits run for the distributed tests
benchmark: digits
data: {val_fraction: 0.15, split_seed: 0, batch_size: 32, eval_batch_size: 1000}
model: {name: mlp, options: {hidden_features: [32], dropout: 0.0}}
train: {epochs: 2, optimizer: sgd, lr: 0.05, momentum: 0.9, select: last}
methods:
  mcp: {}
  swag: {n_samples: 5, start_epoch: 0}
  tradi: {scale: auto, n_samples: 5, init_variance: 0.0}
seeds: [0]
scale_selection: {tolerance: 0.2, iterations: 1, report_untuned: false}
device: cpu
threads: 1
"""

# Started as a script so that its patches reach the spawned ranks (spawn re-runs the main
# script in every child): each rank logs its writes, FAIL_RANK makes one rank raise, and the
# outputs are written without figures (`without_figures`).
CLI_SCRIPT = """\
import os, sys
import tradi.distributed as td
from tradi.experiments import rundir, runner
from tradi.cli import main

def without_figures(write_outputs):
    # no artefacts, no figures: drawing them took half of a run's wall time (14 of 30 s at
    # load 6) and they are no part of what these tests compare (tested in tests/experiments)
    def wrapper(results, artefacts, out_dir):
        return write_outputs(results, {}, out_dir)
    return wrapper

runner.write_outputs = without_figures(runner.write_outputs)

def logged(name, write):
    def wrapper(*args, **kwargs):
        with open(os.environ["WRITES_LOG"], "a") as log:
            log.write(f"{td.rank()} {name}\\n")
        return write(*args, **kwargs)
    return wrapper

for module in (rundir, runner):
    for name in ("write_text_atomic", "save_atomic", "write_outputs"):
        if hasattr(module, name):
            setattr(module, name, logged(name, getattr(module, name)))

run_methods = runner.run_methods

def failing_run_methods(*args, **kwargs):
    if td.rank() == int(os.environ["FAIL_RANK"]):
        raise RuntimeError("injected failure in this rank")
    return run_methods(*args, **kwargs)

if "FAIL_RANK" in os.environ:
    runner.run_methods = failing_run_methods

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""

# DDP averages the two ranks' gradients, each weighted by its share of the global batch (the
# loop corrects the uneven 15 + 14 split), and BatchNorm normalises by the gathered global
# batch: every step is one process's step up to float32 rounding (the sum of two half-batch
# gradients, matrix products over 16 rows instead of 32). 32 momentum-SGD steps and a metric
# computed from those weights move by about 1e-7 (measured: at most 2.5e-7, SWAG's MCE);
# 1e-5 leaves room for other BLAS kernels yet catches any real difference (one sample of 302
# changes the accuracy by 3.3e-3, one batch statistic of one rank by far more).
METRIC_ATOL = 1e-5
# AUROC and AUPR rank pairs of scores: two scores that rounding brings within ~1e-7 of each other
# may swap, which moves the AUROC by 1 / (302 x 300) = 1.1e-5 per pair (measured once: SWAG's
# far-OOD AUROC, one pair). Up to 3 swapped pairs are rounding; a real difference moves far more.
RANK_ATOL = 3 / (302 * 300)


def tradi_run(
    out: Path,
    launcher: list[str],
    options: list[str],
    fail_rank: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`tradi run` of CONFIG into `out` through the patched CLI script; writes logged to
    `out`.writes as "rank function" lines."""
    config = out.parent / "digits-ddp.yaml"
    config.write_text(CONFIG)
    script = out.parent / "tradi_cli.py"
    script.write_text(CLI_SCRIPT)
    env = {**os.environ, "WRITES_LOG": str(writes_log(out))}
    if fail_rank is not None:
        env["FAIL_RANK"] = str(fail_rank)
    return subprocess.run(
        [*launcher, str(script), "run", str(config), "--out", str(out), "--no-progress", *options],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        check=False,
        env=env,
    )


def run_in_this_process(out: Path) -> None:
    """`tradi run` of CONFIG into `out` in the test's own process, outputs without figures like
    CLI_SCRIPT's: the reference run costs no interpreter start or torch import."""
    from tradi.cli import main
    from tradi.experiments import runner

    config = out.parent / "digits-ddp.yaml"
    config.write_text(CONFIG)
    write_outputs = runner.write_outputs

    def without_figures(results: Any, artefacts: Any, out_dir: Path) -> Any:
        return write_outputs(results, {}, out_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "write_outputs", without_figures)
        assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0


def writes_log(out: Path) -> Path:
    return out.parent / f"{out.name}.writes"


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def runs(session_folder: Path) -> dict[str, Path]:
    """The same config in one process, in two (`--nproc 2`) and in two started by torchrun.

    Shared by the pytest-xdist workers (a lock in their common temporary folder), so that the
    runs happen once however the tests are distributed.
    """
    shared = session_folder / "distributed_runner"
    shared.mkdir(exist_ok=True)
    outs = {name: shared / name for name in ("one", "nproc", "torchrun")}
    with FileLock(shared / "runs.lock"):
        if not (outs["one"] / "results.json").exists():
            run_in_this_process(outs["one"])
        for name, launcher, options in (
            ("nproc", [sys.executable], ["--nproc", "2"]),
            ("torchrun", TORCHRUN, []),
        ):
            if not (outs[name] / "results.json").exists():
                done = tradi_run(outs[name], launcher, options)
                assert done.returncode == 0, done.stderr[-4000:]
    return outs


def read_results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def assert_same_metrics(one: dict[str, Any], two: dict[str, Any], atol: float) -> None:
    """Same methods, validation figures, chosen scales and test metrics, within `atol`."""
    assert [p["method"] for p in one["pairs"]] == [p["method"] for p in two["pairs"]]
    for pair_one, pair_two in zip(one["pairs"], two["pairs"], strict=True):
        method = pair_one["method"]
        assert pair_one["epochs"] == pair_two["epochs"]
        for key, value in pair_one["final_val"][0].items():
            assert pair_two["final_val"][0][key] == pytest.approx(value, abs=atol), (method, key)
        scales = [
            p["scale_selection"] and p["scale_selection"]["scale"] for p in (pair_one, pair_two)
        ]
        assert scales[0] == scales[1], method
        for row_one, row_two in zip(pair_one["rows"], pair_two["rows"], strict=True):
            assert row_one["key"] == row_two["key"]
            assert row_one["metrics"].keys() == row_two["metrics"].keys()
            for key, value in row_one["metrics"].items():
                rank = atol > 0 and ("auroc" in key or "aupr" in key)  # 0: the same code path
                tolerance = max(atol, RANK_ATOL) if rank else atol
                assert row_two["metrics"][key] == pytest.approx(value, abs=tolerance), (
                    method,
                    key,
                )


def test_two_processes_give_the_single_process_results(runs: dict[str, Path]) -> None:
    one, two = read_results(runs["one"]), read_results(runs["nproc"])
    # the runs differ: a test that compared a run with itself would pass vacuously
    assert one["pairs"][0]["final_val"] != two["pairs"][0]["final_val"]
    assert_same_metrics(one, two, METRIC_ATOL)
    # the metrics are those of the whole test sets (302 in, 300 OOD), not of one rank's half
    assert one["benchmark"] == two["benchmark"]
    accuracy = two["pairs"][0]["rows"][0]["metrics"]["accuracy"]
    assert accuracy * 302 == pytest.approx(round(accuracy * 302), abs=1e-9)


def test_torchrun_runs_the_same_code_path(runs: dict[str, Path]) -> None:
    # the same two processes and thread counts as --nproc 2: the same computation, bit for bit
    nproc, torchrun = read_results(runs["nproc"]), read_results(runs["torchrun"])
    assert_same_metrics(nproc, torchrun, 0.0)


@pytest.mark.parametrize("name", ["nproc", "torchrun"])
def test_rank_zero_alone_writes_and_writes_everything_once(
    runs: dict[str, Path], name: str
) -> None:
    lines = writes_log(runs[name]).read_text().splitlines()
    assert {line.split()[0] for line in lines} == {"0"}
    # config.yaml, the shared run's methods.json, then per pair (3) its artefacts and result,
    # then the outputs once
    assert [line.split()[1] for line in lines] == [
        "write_text_atomic",
        "write_text_atomic",
        *["save_atomic", "write_text_atomic"] * 3,
        "write_outputs",
    ]
    assert sorted(p.name for p in runs[name].iterdir()) == sorted(
        p.name for p in runs["one"].iterdir()
    )
    assert not list(runs[name].glob("state/*/seed_0/checkpoint"))
    assert not (runs[name] / "state/shared").exists() or not any(
        (runs[name] / "state/shared").iterdir()
    )


def test_a_failing_rank_fails_the_run_and_is_named(tmp_path: Path) -> None:
    done = tradi_run(tmp_path / "failed", [sys.executable], ["--nproc", "2"], fail_rank=1)
    assert done.returncode == 1
    assert "tradi: error: rank 1 of 2 failed first" in done.stderr
    assert "RuntimeError: injected failure in this rank" in done.stderr
    assert not (tmp_path / "failed" / "results.json").exists()
