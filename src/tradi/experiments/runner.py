"""The experiment runner: every method x seed trained, evaluated and written, resumably.

Layout of an output folder::

    config.yaml         the config that ran (with the CLI's overrides applied)
    state/<method>/seed_<s>/checkpoint/   the loop's epoch checkpoints while a pair trains
    state/<method>/seed_<s>/result.json   a finished pair (written atomically, then the
                                          checkpoints are removed)
    state/<method>/seed_<s>/artefacts.pt  its calibration bins and confidence scores (figures)
    state/<method>/seed_<s>/metrics.csv   its per-epoch history (tensorboard/ too, if installed)
    results.json, results.csv, report.md, figures/

Resume: a finished pair is read back, never retrained; the pair in progress continues from its
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

import dataclasses
import json
import logging
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

import tradi
from tradi.data import Benchmark, TensorSplit, load_benchmark
from tradi.distributed import (
    ShardedBatches,
    barrier,
    is_rank_zero,
    shard_dataset,
    world_size,
)
from tradi.experiments._files import write_text_atomic
from tradi.experiments.config import ConfigError, ExperimentConfig, config_from_dict
from tradi.experiments.evaluation import Evaluation, evaluate, predictor
from tradi.experiments.loaders import TensorBatches
from tradi.experiments.report import write_outputs
from tradi.methods import METHODS, Method, SamplingMethod, build_method
from tradi.models import build_model
from tradi.selection import ScaleSearch
from tradi.training.checkpoint import save_atomic
from tradi.training.history import history_callbacks
from tradi.training.loop import LossFn

logger = logging.getLogger(__name__)


ScaleSource = Literal["chosen", "untuned", "config"]


@dataclass(frozen=True)
class Row:
    """One line of the results table: a trained method predicting at one noise setting.

    ``scale`` None: the method's own prediction (its configured scale, if any). ``scale_source``
    says where a noise scale came from: "chosen" on validation, the "untuned" default, or
    "config" (None for methods without one).
    """

    key: str
    method: str
    label: str
    scale: float | None = None
    scale_source: ScaleSource | None = None


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


def loss_function(benchmark: Benchmark) -> LossFn:
    """Cross-entropy; for segmentation with the benchmark's class weights and ignored label."""
    if benchmark.task == "segmentation":
        return nn.CrossEntropyLoss(
            weight=benchmark.class_weights,
            ignore_index=benchmark.ignore_index if benchmark.ignore_index is not None else -100,
        )
    return F.cross_entropy


@dataclass
class _Loaders:
    """``val`` is the whole validation set (scale selection); ``val_shard`` this rank's block of
    it, for the training loop's validation, which reduces its sums over the ranks. The test
    loaders hold this rank's block (the evaluation gathers the predictions). With one process
    every block is the whole split."""

    train: TensorBatches | ShardedBatches
    val: TensorBatches
    val_shard: TensorBatches
    test: TensorBatches
    ood_test: TensorBatches | None
    ood_val: TensorBatches | None
    far_ood_test: TensorBatches | None = None


def _rank_block(split: TensorSplit) -> TensorSplit:
    """This rank's contiguous block of ``split`` (the split itself in a single process)."""
    if world_size() == 1:
        return split
    return split.subset(torch.as_tensor(list(shard_dataset(split).indices)))


def _loaders(benchmark: Benchmark, config: ExperimentConfig, seed: int) -> _Loaders:
    """Fresh loaders for one pair; the training loader's shuffling is seeded by ``seed``.

    In a distributed run every rank draws the single-process global batches and keeps its part
    (`ShardedBatches`), so DDP's averaged gradient is the single-process one.
    """
    size = config.data.eval_batch_size

    def fixed(split: Any) -> TensorBatches | None:
        return None if split is None else TensorBatches(split, size)

    train = TensorBatches(
        benchmark.train,
        config.data.batch_size,
        shuffle=True,
        seed=seed,
        augment=benchmark.augment,
    )
    val = TensorBatches(benchmark.val, size)
    if world_size() == 1:
        return _Loaders(
            train,
            val,
            val,
            TensorBatches(benchmark.test, size),
            fixed(benchmark.ood_test),
            fixed(benchmark.ood_val),
            fixed(benchmark.far_ood_test),
        )
    ood_test = None if benchmark.ood_test is None else _rank_block(benchmark.ood_test)
    far = None if benchmark.far_ood_test is None else _rank_block(benchmark.far_ood_test)
    return _Loaders(
        train=ShardedBatches(train),
        val=val,
        val_shard=TensorBatches(_rank_block(benchmark.val), size),
        test=TensorBatches(_rank_block(benchmark.test), size),
        ood_test=fixed(ood_test),
        ood_val=fixed(benchmark.ood_val),
        far_ood_test=fixed(far),
    )


def _build_options(config: ExperimentConfig, name: str) -> tuple[dict[str, Any], bool]:
    """The options to build ``name`` with and whether its scale is to be chosen ("auto"). An
    "auto" scale is chosen by the runner's one ``select_scale`` call after training (with the
    config's rule and the benchmark's ``ood_val``), so the method is built at a fixed value
    (its untuned default, else its range's low end) and never searches on its own."""
    options = dataclasses.asdict(config.method_options(name))
    cls = METHODS[name]
    if not issubclass(cls, SamplingMethod) or options["scale"] != "auto":
        return options, False
    fixed = cls.default_scale if cls.default_scale is not None else cls.scale_range[0]
    return {**options, "scale": fixed}, True


def _table_rows(name: str, search: ScaleSearch | None, report_untuned: bool) -> list[Row]:
    cls = METHODS[name]
    sampling = issubclass(cls, SamplingMethod)
    if search is None:
        return [Row(name, name, cls.label, scale_source="config" if sampling else None)]
    rows = [Row(name, name, f"{cls.label} (scale chosen on val.)", search.scale, "chosen")]
    untuned = cls.default_scale if sampling else None  # type: ignore[attr-defined]
    if untuned is not None and report_untuned:
        untuned_label = f"{cls.label} (untuned, scale {untuned:.3g})"
        rows.append(Row(f"{name}_untuned", name, untuned_label, untuned, "untuned"))
    return rows


def run_pair(
    config: ExperimentConfig,
    name: str,
    seed: int,
    benchmark: Benchmark,
    pair_dir: Path,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train method ``name`` with ``seed``, choose its scale if asked, evaluate every row.

    Returns the JSON-ready result and the figure artefacts (bins, scores) per row.
    """
    options, choose = _build_options(config, name)
    factory = partial(
        build_model,
        config.model.name,
        benchmark.num_classes,
        benchmark.input_shape,
        **config.model.options,
    )
    method = build_method(
        name,
        factory,
        train=config.train_config(seed, progress=progress),
        loss_fn=loss_function(benchmark),
        **options,
    )
    loaders = _loaders(benchmark, config, seed)
    method.extra_callbacks += history_callbacks(pair_dir)  # metrics.csv (+ TensorBoard)
    info = method.fit(loaders.train, loaders.val_shard, checkpoint_dir=pair_dir / "checkpoint")
    search = None
    if choose:
        assert isinstance(method, SamplingMethod)
        search = method.select_scale(
            loaders.val, config.scale_selection, ood_val_loader=loaders.ood_val
        )
    result: dict[str, Any] = {
        "method": name,
        "seed": seed,
        "train_seconds": info.train_seconds,
        "selection_seconds": search.seconds if search else info.selection_seconds,
        "epochs": [run.epochs for run in info.runs],
        "selected_epochs": [run.selected_epoch for run in info.runs],
        "final_val": [run.history[-1] for run in info.runs if run.history],
        "scale_selection": dataclasses.asdict(search) if search else None,
        "rows": [],
    }
    artefacts: dict[str, Any] = {}
    for row in _table_rows(name, search, config.scale_selection.report_untuned):
        evaluation = evaluate(
            partial(predictor, method, row.scale),
            benchmark,
            loaders.test,
            loaders.ood_test,
            loaders.far_ood_test,
        )
        result["rows"].append(_row_result(row, method, evaluation))
        artefacts[row.key] = {
            "bins": {
                f.name: getattr(evaluation.bins, f.name)
                for f in dataclasses.fields(evaluation.bins)
            },
            "scores_in": evaluation.scores_in,
            "scores_out": evaluation.scores_out,
            "panels": evaluation.panels,
        }
    return result, artefacts


def _row_result(row: Row, method: Method, evaluation: Evaluation) -> dict[str, Any]:
    scale = row.scale
    if scale is None and isinstance(method, SamplingMethod):
        scale = method.noise_scale
    return {
        "key": row.key,
        "label": row.label,
        "scale": scale,
        "scale_source": row.scale_source,
        "forward_passes": method.forward_passes_per_input,
        "test_seconds": evaluation.test_seconds,
        "metrics": evaluation.metrics,
    }


def _same_run(previous: ExperimentConfig, config: ExperimentConfig) -> bool:
    """Whether finished pairs of ``previous`` belong to ``config``: everything but the seeds
    and the set of methods must agree (a resumed run may add seeds or methods)."""
    before, now = previous.to_dict(), config.to_dict()
    shared = before["methods"].keys() & now["methods"].keys()
    settings = [
        {k: v for k, v in c.items() if k not in ("seeds", "methods")} for c in (before, now)
    ]
    return settings[0] == settings[1] and all(
        before["methods"][m] == now["methods"][m] for m in shared
    )


def _prepare_out_dir(out_dir: Path, config: ExperimentConfig, resume: bool) -> None:
    """Check that a resumed run has the same settings; start a fresh run from a clean state."""
    config_path = out_dir / "config.yaml"
    if resume and config_path.exists():
        previous = config_from_dict(yaml.safe_load(config_path.read_text()))
        if not _same_run(previous, config):
            raise ConfigError(
                f"{out_dir} holds a run with other settings; resume it with the same config "
                "(only seeds and methods may be added), or choose another --out"
            )
    if is_rank_zero():
        if not resume and (out_dir / "state").exists():
            logger.warning("starting afresh: removing the previous run's state in %s", out_dir)
            shutil.rmtree(out_dir / "state")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    barrier()  # no rank looks for finished pairs before the old state is gone


def select_methods(config: ExperimentConfig, methods: Sequence[str] | None) -> ExperimentConfig:
    """The config restricted to ``methods`` (in the config's order), refusing unknown names."""
    if not methods:
        return config
    unknown = [m for m in methods if m not in config.methods]
    if unknown:
        raise ConfigError(
            f"method(s) {', '.join(map(repr, unknown))} are not in config {config.name!r}; "
            f"it has {', '.join(config.methods)}"
        )
    return replace(config, methods={k: v for k, v in config.methods.items() if k in methods})


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
    progress: bool = True,
    command: str = "",
    benchmark: Benchmark | None = None,
) -> dict[str, Any]:
    """Train and evaluate every method x seed of ``config`` and write results and report.

    ``benchmark`` replaces loading ``config.benchmark`` (tests use synthetic ones). Returns the
    content of results.json (in a distributed run on rank 0, which writes it; {} elsewhere).
    """
    out_dir = Path(out_dir)
    if benchmark is None:
        benchmark = load_benchmark(
            config.benchmark,
            data_dir,
            val_fraction=config.data.val_fraction,
            seed=config.data.split_seed,
            image_size=config.data.image_size,
        )
    if world_size() > 1 and benchmark.task == "segmentation":
        raise ConfigError(
            f"{config.name}: segmentation runs in one process only (the streamed dense "
            "evaluation and its figures are not sharded across ranks yet); drop --nproc"
        )
    _prepare_out_dir(out_dir, config, resume)
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

    In a distributed run every rank trains and evaluates each pair, rank 0 writes it and alone
    reads the results back (other ranks return empty ones).
    """
    pairs = [(name, seed) for seed in config.seeds for name in config.methods]
    pair_results: list[dict[str, Any]] = []
    artefacts: dict[str, dict[str, Any]] = {}
    progress = progress and is_rank_zero()
    bar = tqdm(pairs, desc="method x seed", disable=not progress, file=sys.stderr)
    for name, seed in bar:
        bar.set_postfix_str(f"{name} seed {seed}")
        pair_dir = out_dir / "state" / name / f"seed_{seed}"
        result_path, artefact_path = pair_dir / "result.json", pair_dir / "artefacts.pt"
        if not (result_path.exists() and artefact_path.exists()):
            if is_rank_zero():
                pair_dir.mkdir(parents=True, exist_ok=True)
            result, pair_artefacts = run_pair(
                config, name, seed, benchmark, pair_dir, progress=progress
            )
            if is_rank_zero():
                save_atomic(pair_artefacts, artefact_path)
                write_text_atomic(result_path, json.dumps(result, indent=1))
                shutil.rmtree(pair_dir / "checkpoint", ignore_errors=True)
                logger.info("%s seed %d done: %s", name, seed, _headline(result))
            barrier()  # every rank sees the pair finished before looking at the next one
        elif is_rank_zero():
            logger.info("%s seed %d: finished earlier, read from %s", name, seed, result_path)
        if not is_rank_zero():
            continue
        result = json.loads(result_path.read_text())
        pair_artefacts = torch.load(artefact_path, weights_only=True)
        pair_results.append(result)
        if seed == config.seeds[0]:
            artefacts.update(pair_artefacts)
    return pair_results, artefacts


def _headline(result: dict[str, Any]) -> str:
    first = result["rows"][0]["metrics"]
    keys = [k for k in ("accuracy", "nll", "auroc", "fpr95_tpr_in") if k in first]
    return (
        ", ".join(f"{k} {first[k]:.4f}" for k in keys) + f", train {result['train_seconds']:.0f}s"
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
