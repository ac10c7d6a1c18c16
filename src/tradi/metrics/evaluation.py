"""`evaluate`: every metric of a predictor in one call (classification, OOD, uncertainty scores).

The metrics themselves live in `tradi.metrics`; this module only runs a predictor over loaders
and hands the predictions to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tradi.metrics.calibration import classification_metrics
from tradi.metrics.ood import ood_metrics
from tradi.metrics.scores import uncertainty_scores

#: The score names of `Evaluation.scores_in` and the keys of `Evaluation.ood`.
SCORE_NAMES = ("mcp", "neg_entropy", "neg_mutual_information")


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured.

    ``classification``: accuracy (fraction), nll (nats), brier, ece, mce, adaptive_ece on the
    in-distribution data (`tradi.metrics.classification_metrics`, 15 bins). ``ood``: per score
    name, `tradi.metrics.ood_metrics` of in- against OOD data (None without ``ood_loader``):
    ``auroc``, ``aupr_in`` / ``aupr_out`` (in-distribution / OOD positive) and FPR95 as
    ``fpr95_tpr_in`` (OOD accepted at 95% of in-distribution kept, the slides' convention) and
    ``fpr95_tpr_out``, all fractions, e.g. ``evaluation.ood["mcp"]["fpr95_tpr_in"]``.
    ``scores_in`` / ``scores_out``: per score name a float32 tensor [N] ([N, H, W] for
    segmentation outputs), higher = more in-distribution: ``mcp`` (max class probability of
    the averaged prediction, the paper's score), ``neg_entropy`` (minus the predictive entropy, nats) and
    ``neg_mutual_information`` (minus the mutual information between prediction and weights;
    0 for a single network, whose ``ood`` then has no entry for it). ``probs``: the averaged in-distribution prediction [N, C].
    """

    classification: dict[str, float]
    ood: dict[str, dict[str, float]] | None
    scores_in: dict[str, Tensor]
    scores_out: dict[str, Tensor] | None
    probs: Tensor


def _batches(loader: Iterable[Any]) -> Iterable[tuple[Tensor, Tensor | None]]:
    for batch in loader:
        if isinstance(batch, (tuple, list)):
            yield batch[0], batch[1] if len(batch) > 1 else None
        else:
            yield batch, None


def _sample_probs(predictor: Any, x: Tensor) -> Tensor:
    """[S, N, C, ...] probabilities: ``sample_probs`` when the predictor has it (an ensemble, a
    method), else its output, [N, C, ...] taken as one sample."""
    sample = getattr(predictor, "sample_probs", None)
    return sample(x) if callable(sample) else predictor(x).unsqueeze(0)


@torch.no_grad()
def _predict(predictor: Any, loader: Iterable[Any]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    probs, labels, scores = [], [], {name: [] for name in SCORE_NAMES}
    for x, y in _batches(loader):
        samples = _sample_probs(predictor, x).float().cpu()
        for name, value in uncertainty_scores(samples).items():
            if name in scores:
                scores[name].append(value)
        probs.append(samples.mean(dim=0))
        if y is not None:
            labels.append(y.cpu())
    if not probs:
        raise ValueError("the loader yielded no batches")
    joined = {name: torch.cat(values) for name, values in scores.items()}
    return torch.cat(probs), joined, torch.cat(labels) if labels else torch.empty(0)


def evaluate(
    predictor: Callable[[Tensor], Tensor] | Any,
    in_loader: Iterable[Any],
    ood_loader: Iterable[Any] | None = None,
    *,
    ignore_index: int | None = None,
) -> Evaluation:
    """Classification metrics on ``in_loader``, OOD detection against ``ood_loader``, and the
    uncertainty scores of every input, in one call.

    ``predictor``: an object with ``sample_probs(x) -> [S, N, C]`` (`tradi.SampledEnsemble`, a
    trained `tradi.methods` method), or a callable ``x -> probs [N, C]`` (softmax outputs; a
    single network has no mutual information). Loaders yield ``(inputs, labels)`` (labels [N]
    int64; ``ignore_index`` leaves a label value out); the OOD loader's labels are ignored.
    Per-pixel OOD (segmentation) is `tradi.metrics.segmentation`'s and the runner's job.

    Raises ValueError when ``in_loader`` has no labels or yields nothing. Sources: ECE (Guo et
    al. 2017, 15 bins); AUROC/AUPR/FPR95 conventions in `tradi.metrics.ood`; scores in
    `tradi.metrics.scores`.
    """
    probs, scores_in, labels = _predict(predictor, in_loader)
    if labels.numel() == 0:
        raise ValueError(
            "in_loader must yield (inputs, labels) batches for the classification metrics"
        )
    classification = classification_metrics(probs, labels, ignore_index=ignore_index)
    ood = scores_out = None
    if ood_loader is not None:
        _, scores_out, _ = _predict(predictor, ood_loader)
        # a single network's mutual information is 0 everywhere: no ranking, no OOD figures
        ranked = [n for n in SCORE_NAMES if n != "neg_mutual_information" or _varies(scores_in[n])]
        ood = {name: ood_metrics(scores_in[name], scores_out[name]) for name in ranked}
    return Evaluation(classification, ood, scores_in, scores_out, probs)


def _varies(scores: Tensor) -> bool:
    """Whether a score takes more than one value (a constant score ranks nothing)."""
    return bool(scores.numel()) and bool((scores != scores.flatten()[0]).any())
