"""Evaluation of one trained method on a benchmark's test (and OOD test) data, one function per
task, so classification and dense segmentation share the runner.

A *predictor* maps a loader to per-batch sample probabilities [S, B, C, ...] on the CPU: a
method's own ``iter_predict``, or a sampling method's ensemble at a given noise scale. The
confidence score everywhere is the maximum class probability (MCP) of the averaged prediction,
as in the paper.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
)

Predictor = Callable[[Iterable[Any]], Iterator[Tensor]]

#: Labelled pixels kept (in expectation) for the score figures of a segmentation benchmark.
#: Known-class and OOD pixels are kept at the same rate, so that the figures' PR curves see the
#: test set's share of OOD pixels (AUPR depends on it).
FIGURE_PIXELS = 200_000
#: Test images kept whole (image, labels, prediction, confidence map) for the segmentation figures.
PANEL_IMAGES = 3


def predictor(method: Method, scale: float | None = None) -> Predictor:
    """``method.iter_predict``, or for a sampling method its ensemble at noise ``scale``."""
    if scale is None:
        return method.iter_predict
    if not isinstance(method, SamplingMethod):
        raise TypeError(f"{method.name} has no noise scale")
    ensemble = method.ensemble(scale)

    def iterate(loader: Iterable[Any]) -> Iterator[Tensor]:
        for batch in loader:
            yield ensemble.sample_probs(batch_inputs(batch)).cpu()

    return iterate


def mean_probs(predict: Predictor, loader: Iterable[Any]) -> Tensor:
    """The predictive distribution (mean over the S passes) over a whole loader: [N, C, ...]."""
    return torch.cat([probs.mean(dim=0) for probs in predict(loader)])


@dataclass
class Evaluation:
    """Metrics (JSON-ready floats), test wall time, and what the figures need; ``build_seconds``
    is the predictor's one-off build (a sampled ensemble's weight sets and BatchNorm statistics),
    0 when it was already built (e.g. by the scale search, whose time counts it)."""

    metrics: dict[str, float]
    test_seconds: float
    bins: CalibrationBins
    scores_in: Tensor | None
    scores_out: Tensor | None
    panels: dict[str, Tensor] | None = None
    build_seconds: float = 0.0
    scores_far: Tensor | None = None  # the far-OOD set's MCP, for the report's figure


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
    set adds its OOD metrics as ``far_auroc``, ``far_fpr95_tpr_in``, ... (classification only)."""
    started = time.perf_counter()
    predict = make_predictor()
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if benchmark.task == "segmentation":
        evaluation = _evaluate_segmentation(predict, benchmark, test_loader)
    else:
        evaluation = _evaluate_classification(predict, test_loader, ood_loader)
        if far_ood_loader is not None:
            assert evaluation.scores_in is not None
            far = all_gather_tensors(mean_probs(predict, far_ood_loader)).max(dim=1).values
            far_metrics = ood_metrics(evaluation.scores_in, far)
            evaluation.scores_far = far
            evaluation.metrics.update({f"far_{k}": v for k, v in far_metrics.items()})
    evaluation.test_seconds = time.perf_counter() - started
    evaluation.build_seconds = build_seconds
    return evaluation


def _evaluate_classification(
    predict: Predictor, test_loader: Iterable[Any], ood_loader: Iterable[Any] | None
) -> Evaluation:
    """In a distributed run the loaders hold this rank's block of each set: the predictions are
    gathered in rank (= dataset) order, and every metric is computed on the whole set."""
    probs = all_gather_tensors(mean_probs(predict, test_loader))
    labels = all_gather_tensors(torch.cat([targets for _, targets in test_loader]))
    metrics = classification_metrics(probs, labels)
    scores_in = probs.max(dim=1).values
    scores_out = None
    if ood_loader is not None:
        probs_ood = all_gather_tensors(mean_probs(predict, ood_loader))
        scores_out = probs_ood.max(dim=1).values
        metrics.update(ood_metrics(scores_in, scores_out))
        metrics["pooled_ece"] = float(paper_pooled_ece(probs, labels, probs_ood))
    return Evaluation(metrics, 0.0, calibration_bins(probs, labels), scores_in, scores_out)


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
    pixels count nowhere. The images of `panel_indices` (of the whole test set) are kept whole
    for the figures; the figures' pixels are drawn per image from a generator seeded by the
    image's index in the test set, so they do not depend on how the set is split.

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
    ood = OODMetrics()
    kept_in: list[Tensor] = []
    kept_out: list[Tensor] = []
    chosen = panel_indices([(None, benchmark.test.y)], ood_label)
    start, labelled = _block_start_and_labelled(test_loader, ignore)
    figure_rate = min(1.0, FIGURE_PIXELS / max(labelled, 1))
    panels: dict[str, list[Tensor]] = {
        k: [] for k in ("index", "image", "labels", "prediction", "confidence")
    }
    for probs, (images, labels) in zip(predict(test_loader), test_loader, strict=True):
        mean = probs.mean(dim=0)
        is_ood = labels == ood_label
        valid = labels != ignore
        known = labels.masked_fill(is_ood, ignore)
        calibration.update(mean, known)
        segmentation.update(mean, known)
        confidence, prediction = mean.max(dim=1)
        ood.update(confidence, is_ood, valid)
        drawn = _figure_draws(confidence.shape, start, figure_rate)
        kept_in.append(confidence[drawn & valid & ~is_ood])
        kept_out.append(confidence[drawn & is_ood])
        here = chosen[(chosen >= start) & (chosen < start + len(labels))]
        for key, values in (
            ("index", here),
            ("image", images[here - start]),
            ("labels", labels[here - start]),
            ("prediction", prediction[here - start]),
            ("confidence", confidence[here - start]),
        ):
            panels[key].append(values)
        start += len(labels)
    metrics = {**calibration.compute(), **segmentation.compute(), **ood.compute()}
    return Evaluation(
        metrics,
        0.0,
        calibration.calibration_bins(),
        all_gather_tensors(torch.cat(kept_in)),
        all_gather_tensors(torch.cat(kept_out)),
        {key: all_gather_tensors(torch.cat(values)) for key, values in panels.items()},
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
