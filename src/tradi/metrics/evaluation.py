"""`evaluate`: every metric of a predictor in one call (classification, OOD, uncertainty scores).

The metrics themselves live in `tradi.metrics`; this module only runs a predictor over loaders
and hands the predictions to them. A network passed as the predictor is evaluated in eval mode
and handed back exactly as it came (every submodule's ``training`` flag, its parameters and
buffers): evaluating twice gives the same numbers (issue 20, item 6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tradi.metrics.calibration import classification_metrics
from tradi.metrics.ood import ood_metrics
from tradi.metrics.ood_scores import (
    OOD_SCORES,
    ScoreDict,
    available_scores,
    predictions,
    resolve_score_name,
    score_predictions,
)
from tradi.plumbing.adapters import ModelIO
from tradi.plumbing.modes import eval_mode, preserved_modes

Outputs = Literal["auto", "probs", "logits"]


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured.

    ``classification``: accuracy (fraction), nll (nats), brier, ece, mce, adaptive_ece on the
    in-distribution data (`tradi.metrics.classification_metrics`, 15 bins). ``ood``: per score
    name, `tradi.metrics.ood_metrics` of in- against OOD data (None without ``ood_loader``):
    ``auroc``, ``aupr_in`` / ``aupr_out`` (in-distribution / OOD positive) and FPR95 as
    ``fpr95_tpr_in`` (OOD accepted at 95% of in-distribution kept, the slides' convention) and
    ``fpr95_tpr_out``, all fractions, e.g. ``evaluation.ood["msp"]["fpr95_tpr_in"]``.
    ``scores_in`` / ``scores_out``: per score name a float32 tensor [N] ([N, H, W] for
    segmentation outputs), higher = more in-distribution, keyed by the names of
    `tradi.metrics.OOD_SCORES` (msp = the paper's MCP, logit, energy, ensemble_energy,
    entropy, mutual_information, variation_ratio, variance; the uncertainties negated). A
    criterion that needs an ensemble (mutual_information, variation_ratio, variance) is 0 for a
    single network: its scores are there, its ``ood`` entry is not (a constant ranks nothing).
    The old names (``mcp``, ``neg_entropy``, ``neg_mutual_information``) still read
    (`tradi.metrics.ood_scores.ScoreDict`). ``probs``: the averaged in-distribution
    prediction [N, C] ([N, C, H, W]).
    """

    classification: dict[str, float]
    ood: dict[str, dict[str, float]] | None
    scores_in: dict[str, Tensor]
    scores_out: dict[str, Tensor] | None
    probs: Tensor


def _batches(
    loader: Iterable[Any], io: ModelIO | None = None, labelled: bool = True
) -> Iterable[tuple[Any, Tensor | None]]:
    """(inputs, labels or None) of each batch: read by ``io`` when given (labels only from a
    labelled loader), else a tuple's first two items or a bare tensor's inputs."""
    for batch in loader:
        if io is not None:
            yield io.inputs(batch), io.targets(batch) if labelled else None
        elif isinstance(batch, (tuple, list)):
            yield batch[0], batch[1] if len(batch) > 1 else None
        else:
            yield batch, None


def _has_logits(predictor: Any) -> bool:
    """Whether ``sample_logits`` exists and works: a `tradi.methods.Method` says so by
    ``gives_logits`` (a method without logits inherits a ``sample_logits`` that raises)."""
    has = callable(getattr(predictor, "sample_logits", None))
    return has and bool(getattr(predictor, "gives_logits", True))


def _output_kind(predictor: Any, outputs: Outputs) -> Literal["probs", "logits"]:
    """ "auto": logits when the predictor has ``sample_logits`` (`tradi.SampledEnsemble`, every
    built-in `tradi.methods` method), else probabilities (``sample_probs``, or a callable's
    softmax output)."""
    if outputs == "auto":
        return "logits" if _has_logits(predictor) else "probs"
    if outputs not in ("probs", "logits"):
        raise ValueError(f"outputs must be 'auto', 'probs' or 'logits', got {outputs!r}")
    has_sampler = callable(getattr(predictor, "sample_probs", None))
    if outputs == "logits" and has_sampler and not _has_logits(predictor):
        raise ValueError(
            f"outputs='logits' needs predictor.sample_logits(x) -> [S, N, C]; "
            f"{type(predictor).__name__} has sample_probs only: pass outputs='probs'"
        )
    return outputs


def _sample_outputs(predictor: Any, x: Tensor, kind: str) -> Tensor:
    """[S, N, C, *] logits or probabilities: ``sample_logits`` / ``sample_probs`` when the
    predictor has it, else its output, [N, C] / [N, C, H, W] taken as one sample and
    [S, N, C] / [S, N, C, H, W] (3 or 5 dims) as S samples."""
    sample = getattr(predictor, f"sample_{kind}", None)
    if callable(sample):
        return sample(x)
    output = predictor(x)
    if not isinstance(output, Tensor) or output.ndim not in (2, 3, 4, 5):
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"the predictor returned {shape}: expected {kind} [N, C], [N, C, H, W] (one "
            "network) or [S, N, C], [S, N, C, H, W] (S samples)"
        )
    return output.unsqueeze(0) if output.ndim in (2, 4) else output


def _score_names(scores: Sequence[str] | str | None, kind: str) -> tuple[str, ...]:
    """Registry names of the requested criteria (default: all the outputs allow)."""
    if scores is None:
        return available_scores(kind == "logits")
    chosen = (scores,) if isinstance(scores, str) else tuple(scores)
    resolved = tuple(dict.fromkeys(resolve_score_name(name) for name in chosen))
    for name in resolved:
        if OOD_SCORES[name].needs == "logits" and kind == "probs":
            raise ValueError(
                f"score {name!r} needs logits and the predictor gives probabilities "
                "(outputs='probs'): pass outputs='logits' with a predictor that returns logits "
                "or has sample_logits(x), or leave scores out"
            )
    return resolved


@contextmanager
def _eval_mode(predictor: Any) -> Iterator[None]:
    """A network (an `nn.Module` without ``sample_probs`` / ``sample_logits``) predicts in eval
    mode: no dropout, BatchNorm's running statistics used and left alone. Every submodule's
    ``training`` flag is restored after, even on an error (`tradi.plumbing.modes`). A module
    that samples (MC dropout style) sets its own modes; only its flags are restored."""
    if not isinstance(predictor, nn.Module):
        yield
        return
    samples = any(callable(getattr(predictor, f"sample_{k}", None)) for k in ("probs", "logits"))
    with preserved_modes(predictor) if samples else eval_mode(predictor):
        yield


@torch.no_grad()
def _predict(
    predictor: Any,
    loader: Iterable[Any],
    kind: str,
    names: tuple[str, ...],
    io: ModelIO | None = None,
    labelled: bool = True,
) -> tuple[Tensor, ScoreDict[Tensor], Tensor]:
    probs, labels, scores = [], [], {name: [] for name in names}
    for x, y in _batches(loader, io, labelled):
        samples = _sample_outputs(predictor, x, kind).float().cpu()
        try:
            inputs = predictions(**{f"sample_{kind}": samples})
        except ValueError as error:
            hint = "; if it returns logits, pass outputs='logits'" if kind == "probs" else ""
            raise ValueError(f"the predictor's output: {error}{hint}") from error
        for name, value in score_predictions(inputs, names).items():
            scores[name].append(value)
        probs.append(inputs.mean_probs)
        if y is not None:
            labels.append(y.cpu())
    if not probs:
        raise ValueError("the loader yielded no batches")
    joined = ScoreDict((name, torch.cat(values)) for name, values in scores.items())
    return torch.cat(probs), joined, torch.cat(labels) if labels else torch.empty(0)


def evaluate(
    predictor: Callable[[Tensor], Tensor] | Any,
    in_loader: Iterable[Any],
    ood_loader: Iterable[Any] | None = None,
    *,
    scores: Sequence[str] | str | None = None,
    outputs: Outputs = "auto",
    ignore_index: int | None = None,
    io: ModelIO | None = None,
) -> Evaluation:
    """Classification metrics on ``in_loader``, OOD detection against ``ood_loader``, and the
    OOD scores of every input, in one call.

    ``predictor``: an object with ``sample_logits(x)`` / ``sample_probs(x)`` -> [S, N, C]
    (`tradi.SampledEnsemble`, a trained `tradi.methods` method), or a callable (a network)
    returning [N, C] (one network) or [S, N, C] (S samples), [N, C, H, W] / [S, N, C, H, W] for
    segmentation. An `nn.Module` predicts in eval mode and comes back with its modes,
    parameters and buffers untouched. ``outputs`` says what it returns: "probs"
    (probabilities, e.g. softmax outputs), "logits", or "auto" (default): logits when it has
    ``sample_logits``, else probabilities. ``scores``: names of `tradi.metrics.OOD_SCORES`
    (e.g. ``("msp", "energy")``; default: every criterion the outputs allow: logits allow
    all, probabilities all but logit, energy and ensemble_energy). Loaders yield
    ``(inputs, labels)`` (labels [N] int64; ``ignore_index`` leaves a label value out); the
    OOD loader's labels are ignored. ``io`` (`tradi.ModelIO`) reads inputs and labels from
    batches of any other structure (dicts, dataclasses), as in `tradi.fit_ensemble`; the
    predictor is then called with ``io.inputs(batch)``. Per-pixel OOD (segmentation) is
    `tradi.metrics.segmentation`'s and the runner's job.

    Raises ValueError when ``in_loader`` has no labels or yields nothing, for an unknown score
    name, a logit score asked of probabilities, an unknown ``outputs``, or outputs that are not
    probabilities under "probs". Sources: ECE (Guo et al. 2017, 15 bins); AUROC/AUPR/FPR95
    conventions in `tradi.metrics.ood`; scores in `tradi.metrics.ood_scores`.
    """
    if not callable(predictor) and hasattr(predictor, "predictive"):
        raise TypeError(
            f"evaluate takes a predictor; a {type(predictor).__name__} holds one: pass its "
            "`.predictive` (e.g. tradi.evaluate(result.predictive, test_loader))"
        )
    kind = _output_kind(predictor, outputs)
    names = _score_names(scores, kind)
    with _eval_mode(predictor):
        probs, scores_in, labels = _predict(predictor, in_loader, kind, names, io)
        if labels.numel() == 0:
            raise ValueError(
                "in_loader must yield (inputs, labels) batches for the classification metrics"
            )
        scores_out = (
            None
            if ood_loader is None
            else _predict(predictor, ood_loader, kind, names, io, labelled=False)[1]
        )
    classification = classification_metrics(probs, labels, ignore_index=ignore_index)
    ood: ScoreDict[dict[str, float]] | None = None
    if scores_out is not None:
        # an ensemble-only criterion of a single network is 0 everywhere: no ranking, no figures
        ranked = [
            n
            for n in names
            if not OOD_SCORES[n].ensemble_only or _varies(torch.cat([scores_in[n], scores_out[n]]))
        ]
        ood = ScoreDict((name, ood_metrics(scores_in[name], scores_out[name])) for name in ranked)
    return Evaluation(classification, ood, scores_in, scores_out, probs)


def _varies(scores: Tensor) -> bool:
    """Whether a score takes more than one value (a constant score ranks nothing)."""
    return bool(scores.numel()) and bool((scores != scores.flatten()[0]).any())
