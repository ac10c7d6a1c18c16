"""One seed's methods: built, trained (once for all that share the run), scale-selected and
evaluated, in named steps: `build`, `fit`, `select`, `evaluate`.

Every method whose `Method.shares_training` is true trains the same network from the same seed
(MCP, MC Dropout, Gaussian perturbation, TRADI, SWAG without an SWA learning rate, temperature
scaling, Deep Ensembles' first member): `fit` trains it once with the union of their callbacks
(TRADI's tracker, SWAG's collection), and each method then `adopt`s a copy of it. Every random
state is put back to its value at the end of training before each method's after-fit step, so
a method's results equal those of its own, separate run (tested). Its ``train_seconds`` is the
shared run without any callbacks' time plus its own callbacks' time, as measured by the loop.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from tradi.data import Benchmark, TensorSplit
from tradi.distributed import ShardedBatches, shard_dataset, world_size
from tradi.experiments.config import ExperimentConfig
from tradi.experiments.evaluation import Evaluation, evaluate, predictor
from tradi.experiments.loaders import TensorBatches
from tradi.methods import METHODS, FitInfo, Method, SamplingMethod, build_method
from tradi.models import build_model
from tradi.selection import ScaleSearch
from tradi.training import Callback, FitResult
from tradi.training.checkpoint import capture_rng_state, restore_rng_state
from tradi.training.history import history_callbacks
from tradi.training.loop import LossFn

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


@dataclass
class Built:
    """A method as built for a seed, and whether its scale is to be chosen ("auto")."""

    name: str
    method: Method
    choose_scale: bool


@dataclass
class Loaders:
    """``val`` is the whole validation set (scale selection, after-fit steps); ``val_shard``
    this rank's block of it, for the training loop's validation, which reduces its sums over
    the ranks. The test loaders hold this rank's block (the evaluation gathers the
    predictions). With one process every block is the whole split."""

    train: TensorBatches | ShardedBatches
    val: TensorBatches
    val_shard: TensorBatches
    test: TensorBatches
    ood_test: TensorBatches | None
    ood_val: TensorBatches | None
    far_ood_test: TensorBatches | None = None


def loss_function(benchmark: Benchmark) -> LossFn:
    """Cross-entropy; for segmentation with the benchmark's class weights and ignored label."""
    if benchmark.task == "segmentation":
        return nn.CrossEntropyLoss(
            weight=benchmark.class_weights,
            ignore_index=benchmark.ignore_index if benchmark.ignore_index is not None else -100,
        )
    return F.cross_entropy


def rank_block(split: TensorSplit) -> TensorSplit:
    """This rank's contiguous block of ``split`` (the split itself in a single process)."""
    if world_size() == 1:
        return split
    return split.subset(torch.as_tensor(list(shard_dataset(split).indices)))


def make_loaders(benchmark: Benchmark, config: ExperimentConfig, seed: int) -> Loaders:
    """Fresh loaders for one seed; the training loader's shuffling is seeded by ``seed``.

    In a distributed run every rank draws the single-process global batches and keeps its part
    (`ShardedBatches`), so DDP's averaged gradient is the single-process one.
    """
    size = config.data.eval_batch_size

    def fixed(split: TensorSplit | None) -> TensorBatches | None:
        return None if split is None else TensorBatches(split, size)

    train = TensorBatches(
        benchmark.train, config.data.batch_size, shuffle=True, seed=seed, augment=benchmark.augment
    )
    val = TensorBatches(benchmark.val, size)
    ood_test, far = benchmark.ood_test, benchmark.far_ood_test
    return Loaders(
        train=train if world_size() == 1 else ShardedBatches(train),
        val=val,
        val_shard=val if world_size() == 1 else TensorBatches(rank_block(benchmark.val), size),
        test=TensorBatches(rank_block(benchmark.test), size),
        ood_test=fixed(None if ood_test is None else rank_block(ood_test)),
        ood_val=fixed(benchmark.ood_val),
        far_ood_test=fixed(None if far is None else rank_block(far)),
    )


def build(
    config: ExperimentConfig, name: str, seed: int, benchmark: Benchmark, progress: bool
) -> Built:
    """Step 1: method ``name`` for ``seed``. An "auto" scale is chosen by `select` (the config's
    rule, the benchmark's ``ood_val``), so the method is built at a fixed value (its untuned
    default, else its range's low end) and never searches on its own."""
    options = dataclasses.asdict(config.method_options(name))
    cls = METHODS[name]
    choose = issubclass(cls, SamplingMethod) and options["scale"] == "auto"
    if choose:
        options["scale"] = (
            cls.default_scale if cls.default_scale is not None else cls.scale_range[0]
        )
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
    return Built(name, method, choose)


def fit(
    group: Sequence[Built], loaders: Loaders, checkpoint_dir: Path, history: Sequence[Callback]
) -> tuple[nn.Module, FitResult, list[Callback]]:
    """Step 2: one training run for every method of ``group`` (all of which share it), with
    the union of their callbacks and the ``history`` writers (metrics.csv), checkpointed in
    ``checkpoint_dir`` (resumable)."""
    callbacks = [
        *(
            callback
            for built in group
            for callback in built.method.training_callbacks(loaders.val_shard)
        ),
        *history,
    ]
    model, result = group[0].method.train_network(
        loaders.train, loaders.val_shard, callbacks, checkpoint_dir
    )
    return model, result, callbacks


def select(built: Built, loaders: Loaders, config: ExperimentConfig) -> ScaleSearch | None:
    """Step 3: the noise scale chosen on validation data, for a method whose scale is "auto"."""
    if not built.choose_scale:
        return None
    assert isinstance(built.method, SamplingMethod)
    return built.method.select_scale(
        loaders.val, config.scale_selection, ood_val_loader=loaders.ood_val
    )


def evaluate_rows(
    built: Built,
    search: ScaleSearch | None,
    loaders: Loaders,
    benchmark: Benchmark,
    report_untuned: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step 4: every table row of the method on the test (and OOD test) sets: the JSON-ready
    rows and the figure artefacts (bins, scores, panels) per row key."""
    rows, artefacts = [], {}
    for row in _table_rows(built, search, report_untuned):
        evaluation = evaluate(
            partial(predictor, built.method, row.scale),
            benchmark,
            loaders.test,
            loaders.ood_test,
            loaders.far_ood_test,
        )
        rows.append(_row_result(row, built.method, evaluation))
        artefacts[row.key] = {
            "bins": {
                f.name: getattr(evaluation.bins, f.name)
                for f in dataclasses.fields(evaluation.bins)
            },
            "scores_in": evaluation.scores_in,
            "scores_out": evaluation.scores_out,
            "scores_far": evaluation.scores_far,
            "panels": evaluation.panels,
        }
    return rows, artefacts


def run_methods(
    config: ExperimentConfig,
    seed: int,
    group: Sequence[str],
    benchmark: Benchmark,
    checkpoint_dir: Path,
    pair_dirs: Mapping[str, Path],
    *,
    history_dirs: Sequence[Path] = (),
    progress: bool = True,
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Train ``group`` (methods that share one run, or one method alone) once for ``seed``, then
    for each method in ``pair_dirs`` (a subset of ``group``) adopt, select and evaluate.

    Yields (name, JSON-ready result, figure artefacts) as each method finishes. A method's own
    extra training (Deep Ensembles' other members) checkpoints in ``pair_dirs[name]/checkpoint``;
    the per-epoch history goes to ``metrics.csv`` in each of ``history_dirs``.
    """
    loaders = make_loaders(benchmark, config, seed)
    built = [build(config, name, seed, benchmark, progress) for name in group]
    # metrics.csv (+ TensorBoard) in the folder of every method of the group, the same for a
    # resumed run whichever of them are still to do (the loop checkpoints callback states)
    histories = {folder: history_callbacks(folder) for folder in history_dirs}
    model, result, callbacks = fit(
        built, loaders, checkpoint_dir, [c for h in histories.values() for c in h]
    )
    trained_state = capture_rng_state(loaders.train)
    for one in built:
        if one.name not in pair_dirs:
            continue
        # a method's own extra training (Deep Ensembles' other members) continues its history
        one.method.extra_callbacks = histories.get(pair_dirs[one.name], [])
        restore_rng_state(trained_state, loaders.train)  # as if this method had trained alone
        info = one.method.adopt(
            copy.deepcopy(model),
            result,
            loaders.train,
            loaders.val,
            callbacks=callbacks,
            checkpoint_dir=pair_dirs[one.name] / "checkpoint",
        )
        search = select(one, loaders, config)
        rows, artefacts = evaluate_rows(
            one, search, loaders, benchmark, config.scale_selection.report_untuned
        )
        yield one.name, _pair_result(one, seed, info, result, group, search, rows), artefacts


def run_pair(
    config: ExperimentConfig,
    name: str,
    seed: int,
    benchmark: Benchmark,
    pair_dir: Path,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Method ``name`` with ``seed`` trained alone (checkpoints in ``pair_dir/checkpoint``),
    its scale chosen if asked, every row evaluated: the result and the figure artefacts."""
    ((_, result, artefacts),) = run_methods(
        config,
        seed,
        [name],
        benchmark,
        pair_dir / "checkpoint",
        {name: pair_dir},
        history_dirs=[pair_dir],
        progress=progress,
    )
    return result, artefacts


def _pair_result(
    built: Built,
    seed: int,
    info: FitInfo,
    shared: FitResult,
    group: Sequence[str],
    search: ScaleSearch | None,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "method": built.name,
        "method_version": built.method.version,  # a resumed run retrains another version's
        "seed": seed,
        "train_seconds": info.train_seconds,
        "training_run": {
            "methods": list(group),
            "seconds": shared.train_seconds,
            "callback_seconds": sum(shared.callback_seconds),
        },
        "selection_seconds": search.seconds if search else info.selection_seconds,
        "epochs": [run.epochs for run in info.runs],
        "selected_epochs": [run.selected_epoch for run in info.runs],
        "final_val": [run.history[-1] for run in info.runs if run.history],
        # a method that chooses its own scale after fitting (tradi_modes) records it in info
        "scale_selection": _search_record(search or info.scale_search),
        "temperature": getattr(built.method, "temperature", None),  # temperature scaling's T
        "member_seeds": getattr(built.method, "member_seeds", None),  # Deep Ensembles'
        "rows": rows,
    }


def _search_record(search: ScaleSearch | None) -> dict[str, Any] | None:
    return dataclasses.asdict(search) if search else None


def _table_rows(built: Built, search: ScaleSearch | None, report_untuned: bool) -> list[Row]:
    name, cls = built.name, METHODS[built.name]
    sampling = issubclass(cls, SamplingMethod)
    if search is None:
        return [Row(name, name, cls.label, scale_source="config" if sampling else None)]
    rows = [Row(name, name, f"{cls.label} (scale chosen on val.)", search.scale, "chosen")]
    untuned = cls.default_scale if sampling else None  # type: ignore[attr-defined]
    if untuned is not None and report_untuned:
        untuned_label = f"{cls.label} (untuned, scale {untuned:.3g})"
        rows.append(Row(f"{name}_untuned", name, untuned_label, untuned, "untuned"))
    return rows


def _row_result(row: Row, method: Method, evaluation: Evaluation) -> dict[str, Any]:
    scale = row.scale if row.scale is not None else method.scale_in_use
    return {
        "key": row.key,
        "label": row.label,
        "scale": scale,
        "scale_source": row.scale_source,
        "forward_passes": method.forward_passes_per_input,
        "test_seconds": evaluation.test_seconds,
        "build_seconds": evaluation.build_seconds,
        "metrics": evaluation.metrics,  # the OOD ones: the msp score's (the paper's MCP)
        # every OOD score of tradi.metrics.OOD_SCORES the outputs allow (the tables show the
        # config's ood_score), those left out and why, the streamed metrics' error bounds
        "ood_scores": evaluation.ood_scores,
        **({"far_ood_scores": evaluation.far_ood_scores} if evaluation.far_ood_scores else {}),
        "ood_scores_left_out": evaluation.ood_left_out,
        **({"ood_scores_error_bounds": evaluation.ood_bounds} if evaluation.ood_bounds else {}),
        # every seed's bins, so the report's reliability figure pools the seeds
        "calibration_bins": {
            f.name: getattr(evaluation.bins, f.name).tolist()
            for f in dataclasses.fields(evaluation.bins)
        },
    }
