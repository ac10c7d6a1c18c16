"""Evaluation of one trained method on a benchmark's test (and OOD test) data, one function per
task, so classification and dense segmentation share the runner.

A *predictor* maps a loader to per-batch predictions on the CPU: `Predictions` (the samples'
logits and probabilities [S, B, C, ...]) or a plain tensor of sample probabilities. A method
predicts through ``iter_outputs`` (its logits when it `gives_logits`), a sampling method at a
given noise scale through its ensemble's ``sample_logits``.

Every OOD criterion of `tradi.metrics.OOD_SCORES` that the outputs allow is scored
(`score_plan`): ``Evaluation.ood_scores`` holds each one's AUROC, AUPR-in, AUPR-out and FPR95.
The top-level OOD metrics (``auroc``, ...) and the figures' scores stay those of ``msp``, the
maximum class probability of the averaged prediction (the paper's MCP); the report's tables
show the configured score (`tradi.experiments.tables`). Classification: exact (sort-based)
metrics on every test score (a test set's scores fit in memory). Segmentation: streamed,
one `score_ood_metrics` histogram per score (its own range; unbounded scores after atan), with
the binning's error bounds in ``Evaluation.ood_bounds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tradi.data import Benchmark
from tradi.distributed import all_gather_tensors, all_reduce_sums, rank
from tradi.methods import Method, SamplingMethod
from tradi.methods.base import batch_inputs
from tradi.metrics import (
    CalibrationBins,
    ClassificationMetrics,
    OODMetrics,
    SegmentationMetrics,
    calibration_bins,
    classification_metrics,
    ood_metrics,
    paper_pooled_ece,
    score_ood_metrics,
)
from tradi.metrics.ood_scores import OOD_SCORES, Predictions, predictions, score_predictions

Predictor = Callable[[Iterable[Any]], Iterator[Predictions | Tensor]]
#: OOD metrics per score name: {"msp": {"auroc": ..., "aupr_in": ..., ...}, ...}
ScoreMetrics = dict[str, dict[str, float]]
#: The score the top-level metrics and the figures use: the paper's MCP.
FIGURE_SCORE = "msp"

#: Labelled pixels kept (in expectation) for the score figures of a segmentation benchmark.
#: Known-class and OOD pixels are kept at the same rate, so that the figures' PR curves see the
#: test set's share of OOD pixels (AUPR depends on it).
FIGURE_PIXELS = 200_000
#: Test images kept whole (image, labels, prediction, confidence map) for the segmentation figures.
PANEL_IMAGES = 3


def predictor(method: Method, scale: float | None = None) -> Predictor:
    """The method's `Predictions` batch by batch: its ``iter_outputs`` (logits when it
    `gives_logits`, else probabilities), or for a sampling method its ensemble's logits at
    noise ``scale``. Raises TypeError for a scale given to a method without one."""
    if scale is None:
        kind = "logits" if method.gives_logits else "probs"

        def outputs(loader: Iterable[Any]) -> Iterator[Tensor]:
            return method.iter_outputs(loader, kind)
    else:
        if not isinstance(method, SamplingMethod):
            raise TypeError(f"{method.name} has no noise scale")
        ensemble, kind = method.ensemble(scale), "logits"

        def outputs(loader: Iterable[Any]) -> Iterator[Tensor]:
            for batch in loader:
                yield ensemble.sample_logits(batch_inputs(batch, method.io)).cpu()

    def iterate(loader: Iterable[Any]) -> Iterator[Predictions]:
        for values in outputs(loader):
            yield predictions(**{f"sample_{kind}": values})

    return iterate


def as_predictions(item: Predictions | Tensor) -> Predictions:
    """A predictor's batch as `Predictions`: a tensor is taken as sample probabilities."""
    return item if isinstance(item, Predictions) else predictions(sample_probs=item)


def score_plan(has_logits: bool, n_samples: int) -> tuple[tuple[str, ...], dict[str, str]]:
    """The `OOD_SCORES` names to score, and those left out with the reason: a logit score
    when there are no logits, an ensemble-only score for one forward pass (S = 1: constant)."""
    names, left_out = [], {}
    for name, spec in OOD_SCORES.items():
        if spec.needs == "logits" and not has_logits:
            left_out[name] = "needs logits: the method gives probabilities only"
        elif spec.ensemble_only and n_samples == 1:
            left_out[name] = "constant for one forward pass (S = 1): it ranks nothing"
        else:
            names.append(name)
    return tuple(names), left_out


@dataclass
class Evaluation:
    """Metrics (JSON-ready floats), test wall time, and what the figures need; ``build_seconds``
    is the predictor's one-off build (a sampled ensemble's weight sets and BatchNorm statistics),
    0 when it was already built (e.g. by the scale search, whose time counts it).

    ``ood_scores`` / ``far_ood_scores``: the OOD metrics of every score (`score_plan`) against
    the OOD / far-OOD test set; ``ood_left_out``: the scores not computed and why;
    ``ood_bounds``: per score, the streamed metrics' bounds on their distance to the exact ones
    (segmentation; empty where the metrics are exact)."""

    metrics: dict[str, float]
    test_seconds: float
    bins: CalibrationBins
    scores_in: Tensor | None
    scores_out: Tensor | None
    panels: dict[str, Tensor] | None = None
    build_seconds: float = 0.0
    scores_far: Tensor | None = None  # the far-OOD set's MCP, for the report's figure
    ood_scores: ScoreMetrics = field(default_factory=dict)
    far_ood_scores: ScoreMetrics = field(default_factory=dict)
    ood_left_out: dict[str, str] = field(default_factory=dict)
    ood_bounds: ScoreMetrics = field(default_factory=dict)


def evaluate(
    make_predictor: Callable[[], Predictor],
    benchmark: Benchmark,
    test_loader: Iterable[Any],
    ood_loader: Iterable[Any] | None,
    far_ood_loader: Iterable[Any] | None = None,
) -> Evaluation:
    """Every metric of the benchmark's task. ``test_seconds`` times prediction and metrics over
    the test and OOD test data together; ``build_seconds`` the predictor's build apart (a
    sampling method re-estimates BatchNorm statistics per sample there; an ensemble a scale
    search already built costs nothing here), so every row's test time is comparable. A far-OOD
    set adds its OOD metrics as ``far_auroc``, ``far_fpr95_tpr_in``, ... (msp) and every
    score's in ``far_ood_scores`` (classification only)."""
    started = time.perf_counter()
    predict = make_predictor()
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if benchmark.task == "segmentation":
        evaluation = _evaluate_segmentation(predict, benchmark, test_loader)
    else:
        evaluation = _evaluate_classification(predict, test_loader, ood_loader, far_ood_loader)
    evaluation.test_seconds = time.perf_counter() - started
    evaluation.build_seconds = build_seconds
    return evaluation


def _scored(
    predict: Predictor, loader: Iterable[Any]
) -> tuple[Tensor, dict[str, Tensor], dict[str, str]]:
    """Over a whole loader (gathered over the ranks): the averaged prediction [N, C], every
    score of `score_plan` [N] by name, and the scores left out."""
    means: list[Tensor] = []
    scores: dict[str, list[Tensor]] = {}
    left_out: dict[str, str] = {}
    for item in predict(loader):
        batch = as_predictions(item)
        names, left_out = score_plan(batch.logits is not None, batch.probs.shape[0])
        means.append(batch.mean_probs)
        for name, values in score_predictions(batch, names).items():
            scores.setdefault(name, []).append(values)
    gathered = {name: all_gather_tensors(torch.cat(parts)) for name, parts in scores.items()}
    return all_gather_tensors(torch.cat(means)), gathered, left_out


def _ood_by_score(scores_in: dict[str, Tensor], scores_out: dict[str, Tensor]) -> ScoreMetrics:
    """Exact `ood_metrics` of every score both sets have."""
    return {n: ood_metrics(scores_in[n], scores_out[n]) for n in scores_in if n in scores_out}


def _evaluate_classification(
    predict: Predictor,
    test_loader: Iterable[Any],
    ood_loader: Iterable[Any] | None,
    far_ood_loader: Iterable[Any] | None = None,
) -> Evaluation:
    """In a distributed run the loaders hold this rank's block of each set: the predictions are
    gathered in rank (= dataset) order, and every metric is computed on the whole set."""
    probs, scores_in, left_out = _scored(predict, test_loader)
    labels = all_gather_tensors(torch.cat([targets for _, targets in test_loader]))
    metrics = classification_metrics(probs, labels)
    evaluation = Evaluation(
        metrics, 0.0, calibration_bins(probs, labels), scores_in[FIGURE_SCORE], None
    )
    evaluation.ood_left_out = left_out
    if ood_loader is not None:
        probs_ood, scores_out, _ = _scored(predict, ood_loader)
        evaluation.ood_scores = _ood_by_score(scores_in, scores_out)
        evaluation.scores_out = scores_out[FIGURE_SCORE]
        metrics.update(evaluation.ood_scores[FIGURE_SCORE])
        metrics["pooled_ece"] = float(paper_pooled_ece(probs, labels, probs_ood))
    if far_ood_loader is not None:
        _, scores_far, _ = _scored(predict, far_ood_loader)
        evaluation.far_ood_scores = _ood_by_score(scores_in, scores_far)
        evaluation.scores_far = scores_far[FIGURE_SCORE]
        far = evaluation.far_ood_scores[FIGURE_SCORE]
        metrics.update({f"far_{k}": v for k, v in far.items()})
    return evaluation


def panel_indices(loader: Iterable[Any], ood_label: int, count: int = PANEL_IMAGES) -> Tensor:
    """Test images for the figures, chosen from the labels alone: the loader's images split into
    ``count`` consecutive runs (CamVid's test set is two video sequences in order, so the picks
    are not near-identical frames), and in each run the image with the most ``ood_label``
    (pedestrian) pixels, the earliest on ties."""
    counts = torch.cat([(labels == ood_label).flatten(1).sum(dim=1) for _, labels in loader])
    runs = torch.arange(len(counts)).tensor_split(min(count, len(counts)))
    return torch.stack([run[counts[run].argmax()] for run in runs])


def _evaluate_segmentation(
    predict: Predictor, benchmark: Benchmark, test_loader: Iterable[Any]
) -> Evaluation:
    """Dense predictions streamed batch by batch: known-class pixels give the classification
    and segmentation (mIoU) metrics, pedestrian (``ood_label``) pixels are the OOD set, ignored
    pixels count nowhere; every score of `score_plan` streams into its own `OODMetrics`. The
    images of `panel_indices` (of the whole test set) are kept whole for the figures; the
    figures' pixels are drawn per image from a generator seeded by the image's index in the
    test set, so they do not depend on how the set is split.

    In a distributed run ``test_loader`` holds this rank's contiguous block of the test set:
    the streaming metrics reduce their sums over the ranks in ``compute()``, and the figure
    pixels and panels are gathered in rank (= dataset) order, so every rank returns the
    single-process evaluation."""
    ignore, ood_label = benchmark.ignore_index, benchmark.ood_label
    if ignore is None or ood_label is None:
        raise ValueError(
            f"{benchmark.name}: a segmentation benchmark needs ignore_index and ood_label"
        )
    calibration = ClassificationMetrics(ignore_index=ignore)
    segmentation = SegmentationMetrics(benchmark.num_classes, ignore_index=ignore)
    ood: dict[str, OODMetrics] = {}
    left_out: dict[str, str] = {}
    figures = _SegmentationFigures(test_loader, benchmark.test.y, ignore, ood_label)
    for item, (images, labels) in zip(predict(test_loader), test_loader, strict=True):
        batch = as_predictions(item)
        names, left_out = score_plan(batch.logits is not None, batch.probs.shape[0])
        mean = batch.mean_probs
        is_ood = labels == ood_label
        valid = labels != ignore
        known = labels.masked_fill(is_ood, ignore)
        calibration.update(mean, known)
        segmentation.update(mean, known)
        for name, values in score_predictions(batch, names).items():
            if name not in ood:
                ood[name] = score_ood_metrics(name, benchmark.num_classes)
            ood[name].update(values, is_ood, valid)
        figures.add(images, labels, mean)
    evaluation = Evaluation(
        {**calibration.compute(), **segmentation.compute()},
        0.0,
        calibration.calibration_bins(),
        *figures.gathered(),
    )
    evaluation.ood_scores = {name: meter.compute() for name, meter in ood.items()}
    evaluation.ood_bounds = {name: meter.error_bounds() for name, meter in ood.items()}
    evaluation.ood_left_out = left_out
    evaluation.metrics.update(evaluation.ood_scores[FIGURE_SCORE])
    return evaluation


class _SegmentationFigures:
    """What the segmentation figures keep, batch by batch: the msp (MCP) of a seeded draw of
    pixels (``FIGURE_PIXELS`` in expectation) and the `panel_indices` images whole."""

    def __init__(self, loader: Iterable[Any], test_labels: Tensor, ignore: int, ood: int) -> None:
        self.ignore, self.ood_label = ignore, ood
        self.chosen = panel_indices([(None, test_labels)], ood)
        self.start, labelled = _block_start_and_labelled(loader, ignore)
        self.rate = min(1.0, FIGURE_PIXELS / max(labelled, 1))
        self.kept_in: list[Tensor] = []
        self.kept_out: list[Tensor] = []
        self.panels: dict[str, list[Tensor]] = {
            k: [] for k in ("index", "image", "labels", "prediction", "confidence")
        }

    def add(self, images: Tensor, labels: Tensor, mean: Tensor) -> None:
        """One batch: its images, labels and averaged prediction [B, C, H, W]."""
        confidence, prediction = mean.max(dim=1)
        is_ood, valid = labels == self.ood_label, labels != self.ignore
        drawn = _figure_draws(confidence.shape, self.start, self.rate)
        self.kept_in.append(confidence[drawn & valid & ~is_ood])
        self.kept_out.append(confidence[drawn & is_ood])
        chosen, start = self.chosen, self.start
        here = chosen[(chosen >= start) & (chosen < start + len(labels))]
        for key, values in (
            ("index", here),
            ("image", images[here - start]),
            ("labels", labels[here - start]),
            ("prediction", prediction[here - start]),
            ("confidence", confidence[here - start]),
        ):
            self.panels[key].append(values)
        self.start += len(labels)

    def gathered(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Kept in-distribution and OOD scores and the panels, gathered over the ranks."""
        return (
            all_gather_tensors(torch.cat(self.kept_in)),
            all_gather_tensors(torch.cat(self.kept_out)),
            {key: all_gather_tensors(torch.cat(values)) for key, values in self.panels.items()},
        )


def _block_start_and_labelled(loader: Iterable[Any], ignore: int) -> tuple[int, int]:
    """The index in the test set of this rank's first image (0 in one process) and the
    labelled pixels of the whole test set (summed over the ranks)."""
    images = sum(len(labels) for _, labels in loader)
    labelled = sum(int((labels != ignore).sum()) for _, labels in loader)
    sizes = all_gather_tensors(torch.tensor([images]))
    return int(sizes[: rank()].sum()), int(all_reduce_sums({"labelled": labelled})["labelled"])


def _figure_draws(shape: torch.Size, start: int, rate: float) -> Tensor:
    """Which pixels of a batch of images ``start``, ``start + 1``, ... the figures keep: uniform
    draws below ``rate``, from a generator seeded by each image's index."""
    return torch.stack(
        [
            torch.rand(shape[1:], generator=torch.Generator().manual_seed(start + i)) < rate
            for i in range(shape[0])
        ]
    )
