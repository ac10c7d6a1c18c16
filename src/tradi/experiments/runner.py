"""The experiment runner: every method x seed trained, evaluated and written, resumably.

Layout of an output folder::

    config.yaml         the config that ran (with the CLI's overrides applied)
    run.lock            while a run is live: its pid, host, start time and command
                        (`tradi.experiments.rundir`: one folder, one run)
    state/shared/seed_<s>/                the seed's shared training run while it is needed:
                                          its epoch checkpoints and methods.json, the methods
                                          that share it (`tradi.experiments.pairs`)
    state/<method>/seed_<s>/checkpoint/   the loop's epoch checkpoints of a method's own
                                          training (a method that does not share the run,
                                          Deep Ensembles' other members)
    state/<method>/seed_<s>/result.json   a finished pair (written atomically, then the
                                          checkpoints are removed)
    state/<method>/seed_<s>/artefacts.pt  its calibration bins and confidence scores (figures)
    state/<method>/seed_<s>/metrics.csv   its per-epoch history (tensorboard/ too, if installed)
    results.json, results.csv, report.md, figures/

Resume: a finished pair is read back, never retrained; a run in progress continues from its
last epoch checkpoint (model, optimizer, scheduler, tracker, RNG and loader states), so the
final results equal an uninterrupted run's. Everything after training is a deterministic
function of the trained state and the seed.

Distributed (N processes, `tradi run --nproc N` or torchrun): each rank trains on its part of
every single-process global batch under DDP, validates on its block of the validation set (the
loop reduces the sums), chooses noise scales on the whole validation set (every rank the same
choice), predicts its block of the test sets and gathers the predictions, so the metrics are
computed on the whole test set. Rank 0 alone writes; the folder must be shared by the ranks.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import tradi
from tradi.data import Benchmark, load_benchmark
from tradi.distributed import barrier, is_rank_zero
from tradi.experiments._files import write_text_atomic
from tradi.experiments.config import ExperimentConfig
from tradi.experiments.pairs import build, loss_function, run_methods
from tradi.experiments.report import write_outputs
from tradi.experiments.rundir import claim_out_dir
from tradi.experiments.summary import duration
from tradi.methods import METHODS
from tradi.training.checkpoint import save_atomic

logger = logging.getLogger(__name__)

__all__ = ["loss_function", "run_experiment", "versions"]


def versions() -> dict[str, str]:
    """What produced the numbers: package versions, Python, platform and the git commit."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "tradi": tradi.__version__,
        "git_commit": commit,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
    progress: bool = True,
    command: str = "",
    benchmark: Benchmark | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train and evaluate every method x seed of ``config`` and write results and report.

    One folder, one run (`tradi.experiments.rundir`): the run holds ``out_dir/run.lock`` while
    it runs; ``resume`` continues the run in ``out_dir`` (its shared settings must equal
    ``config``'s; seeds and methods may be added); ``overwrite`` deletes a previous run's
    results and state there first; with neither, a folder holding another run is refused.
    ``benchmark`` replaces loading ``config.benchmark`` (tests use synthetic ones). Returns the
    content of results.json (in a distributed run on rank 0, which writes it; {} elsewhere).

    Raises `OutputFolderError` (a `ConfigError`) when the folder is held by a live run, holds
    another run without ``resume``/``overwrite``, or a resume's settings differ (named);
    `tradi.training.checkpoint.CheckpointError` (an ``OSError``) for an unreadable checkpoint.
    """
    out_dir = Path(out_dir)
    with claim_out_dir(out_dir, config, resume=resume, overwrite=overwrite):
        if benchmark is None:
            benchmark = load_benchmark(
                config.benchmark,
                data_dir,
                val_fraction=config.data.val_fraction,
                seed=config.data.split_seed,
                image_size=config.data.image_size,
            )
        return _run_and_write(config, benchmark, out_dir, progress, command)


def _run_and_write(
    config: ExperimentConfig, benchmark: Benchmark, out_dir: Path, progress: bool, command: str
) -> dict[str, Any]:
    """Every pair trained (or read back), then results, report and figures written."""
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        pair_results, artefacts = _run_pairs(config, benchmark, out_dir, progress)
    finally:
        torch.set_num_threads(threads)
    if not is_rank_zero():
        return {}
    results = {
        "config": config.to_dict(),
        "command": command,
        "seeds": list(config.seeds),
        "versions": versions(),
        "benchmark": _benchmark_summary(benchmark),
        "pairs": pair_results,
    }
    return write_outputs(results, artefacts, out_dir)


def _run_pairs(
    config: ExperimentConfig, benchmark: Benchmark, out_dir: Path, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every method x seed, finished pairs read back; artefacts of the first seed only.

    Per seed, the methods that share the seed's training run train it once (`run_methods`),
    every other method trains alone. In a distributed run every rank trains and evaluates each
    pair, rank 0 writes it and alone reads the results back (other ranks return empty ones).
    """
    pair_results: list[dict[str, Any]] = []
    artefacts: dict[str, dict[str, Any]] = {}
    progress = progress and is_rank_zero()
    bar = tqdm(
        total=len(config.seeds) * len(config.methods),
        desc="method x seed",
        disable=not progress,
        file=sys.stderr,
    )
    for seed in config.seeds:
        for group, run_dir in _training_groups(config, benchmark, out_dir, seed):
            pair_dirs = {name: _pair_dir(out_dir, name, seed) for name in group}
            todo = {name: path for name, path in pair_dirs.items() if not _finished(path, name)}
            if todo:
                _run_group(config, seed, group, benchmark, run_dir, pair_dirs, todo, progress)
            bar.update(len(group))
        if not is_rank_zero():
            continue
        for name in config.methods:
            pair_dir = _pair_dir(out_dir, name, seed)
            pair_results.append(json.loads((pair_dir / "result.json").read_text()))
            if seed == config.seeds[0]:
                artefacts.update(torch.load(pair_dir / "artefacts.pt", weights_only=True))
    bar.close()
    return pair_results, artefacts


def _pair_dir(out_dir: Path, name: str, seed: int) -> Path:
    return out_dir / "state" / name / f"seed_{seed}"


def _finished(pair_dir: Path, name: str) -> bool:
    """Whether the pair is written, by the method's current `Method.version` (an older one is
    another experiment, Deep Ensembles' old member seeds: trained again, with a warning)."""
    result = pair_dir / "result.json"
    if not (result.exists() and (pair_dir / "artefacts.pt").exists()):
        return False
    written = json.loads(result.read_text()).get("method_version", 1)
    if written != METHODS[name].version:
        logger.warning(
            "%s: written by version %s of %s, now %s; training it again",
            pair_dir,
            written,
            name,
            METHODS[name].version,
        )
        return False
    return True


def _training_groups(
    config: ExperimentConfig, benchmark: Benchmark, out_dir: Path, seed: int
) -> list[tuple[list[str], Path]]:
    """The methods of ``seed`` grouped by training run, each with its run's checkpoint folder:
    those that share the seed's run together (``state/shared/seed_<s>``), then each other
    method alone (``state/<method>/seed_<s>/checkpoint``)."""
    shares = {
        name: build(config, name, seed, benchmark, False).method.shares_training()
        for name in config.methods
    }
    shared = [name for name in config.methods if shares[name]]
    groups = [([name], _pair_dir(out_dir, name, seed) / "checkpoint") for name in config.methods]
    groups = [group for group in groups if not shares[group[0][0]]]
    if shared:
        groups.insert(0, (shared, out_dir / "state" / "shared" / f"seed_{seed}"))
    return groups


def _run_group(
    config: ExperimentConfig,
    seed: int,
    group: list[str],
    benchmark: Benchmark,
    run_dir: Path,
    pair_dirs: dict[str, Path],
    todo: dict[str, Path],
    progress: bool,
) -> None:
    """Train ``group``'s run (resuming it), finish and write each pair of ``todo``, then drop
    the run's checkpoints. The run's method list is kept beside its checkpoints: a resumed run
    whose list changed (methods added) trains afresh, as its callbacks differ."""
    manifest = run_dir / "methods.json"
    if is_rank_zero():
        if manifest.exists() and json.loads(manifest.read_text()) != group:
            logger.warning("%s: the methods changed, training this run afresh", run_dir)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(manifest, json.dumps(group))
        # names the epoch lines that follow (the loop's own log lines carry no method or seed)
        logger.info("seed %d: training %s", seed, " + ".join(group))
    barrier()
    for name, result, pair_artefacts in run_methods(
        config,
        seed,
        group,
        benchmark,
        run_dir,
        todo,
        history_dirs=list(pair_dirs.values()),
        progress=progress,
    ):
        pair_dir = todo[name]
        if is_rank_zero():
            save_atomic(pair_artefacts, pair_dir / "artefacts.pt")
            write_text_atomic(pair_dir / "result.json", json.dumps(result, indent=1))
            shutil.rmtree(pair_dir / "checkpoint", ignore_errors=True)
            logger.info("%s seed %d done: %s", name, seed, _headline(result))
        barrier()  # every rank sees the pair finished before looking at the next one
    if is_rank_zero():
        shutil.rmtree(run_dir, ignore_errors=True)


def _headline(result: dict[str, Any]) -> str:
    first = result["rows"][0]["metrics"]
    keys = [k for k in ("accuracy", "nll", "auroc", "fpr95_tpr_in") if k in first]
    return (
        ", ".join(f"{k} {first[k]:.4f}" for k in keys)
        + f", train {duration(result['train_seconds'])}"
    )


def _benchmark_summary(benchmark: Benchmark) -> dict[str, Any]:
    def size(split: Any) -> int | None:
        return None if split is None else len(split)

    return {
        "name": benchmark.name,
        "task": benchmark.task,
        "num_classes": benchmark.num_classes,
        "class_names": list(benchmark.class_names),
        "input_shape": list(benchmark.input_shape),
        "train": size(benchmark.train),
        "val": size(benchmark.val),
        "test": size(benchmark.test),
        "ood_test": size(benchmark.ood_test),
        "ood_val": size(benchmark.ood_val),
    }
