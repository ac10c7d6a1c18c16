"""The one noise-scale search (`search_scale`): the rules of `tradi.selection.rules` applied to
ensembles built by a caller's function, scored on validation data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from tradi.inference.ensemble import SampledEnsemble
from tradi.metrics import ClassificationMetrics, OODMetrics
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.modes import eval_mode
from tradi.selection.ladder import Scorer, largest_within, lowest_nll
from tradi.selection.rules import ScalePoint, ScaleSearch, ScaleSelection


@torch.no_grad()
def score(
    predict: Callable[[Tensor], Tensor],
    loader: Iterable[Any],
    ignore_index: int | None = None,
    ood_loader: Iterable[Any] | None = None,
    io: ModelIO = DEFAULT_IO,
) -> tuple[float, float, float | None]:
    """(mean NLL, accuracy, AUROC or None) of ``predict``'s probabilities [N, C, ...] over
    ``(inputs, targets)`` batches; the AUROC (max class probability, in-distribution positive)
    only when ``ood_loader`` is given. Labels equal to ``ignore_index`` count nowhere; ``io``
    reads inputs and targets from a batch."""
    metrics = ClassificationMetrics(ignore_index=ignore_index)
    ood = OODMetrics() if ood_loader is not None else None
    for batch in loader:
        probs, targets = predict(io.inputs(batch)).cpu(), io.targets(batch)
        metrics.update(probs, targets)
        if ood is not None:
            valid = None if ignore_index is None else targets != ignore_index
            ood.update(probs.max(dim=1).values, False, valid)
    auroc = None
    if ood is not None:
        assert ood_loader is not None
        for batch in ood_loader:
            ood.update(predict(io.inputs(batch)).cpu().max(dim=1).values, True)
        auroc = float(ood.compute()["auroc"])
    values = metrics.compute()
    return float(values["nll"]), float(values["accuracy"]), auroc


def network_predict(model: nn.Module, io: ModelIO = DEFAULT_IO) -> Callable[[Any], Tensor]:
    """The trained network alone, in eval mode: softmax probabilities of one pass.

    Each call evaluates ``model`` in eval mode (dropout off, BatchNorm on its running
    statistics: deterministic) and sets every submodule's mode back as it was
    (`tradi.plumbing.modes.eval_mode`): the user's model is left as it came (issue 20)."""
    device = next(model.parameters()).device

    def predict(inputs: Any) -> Tensor:
        with eval_mode(model):
            return io.logits(io.forward(model, to_device(inputs, device))).softmax(dim=1)

    return predict


def search_scale(
    make_ensemble: Callable[[float], SampledEnsemble],
    network: nn.Module,
    val_loader: Iterable[Any],
    selection: ScaleSelection,
    default_range: tuple[float, float],
    *,
    start: float = 1.0,
    ood_val_loader: Iterable[Any] | None = None,
    ignore_index: int | None = None,
    io: ModelIO = DEFAULT_IO,
    reference: Callable[[Any], Tensor] | None = None,
) -> tuple[ScaleSearch, SampledEnsemble]:
    """Choose a scale by ``selection``'s rule; return the record and the chosen ensemble.

    Args:
        make_ensemble: scale -> the `SampledEnsemble` at that scale (a deterministic function).
        network: the trained network the samples are drawn around; its validation NLL is the
            reference of the NLL bound.
        val_loader: ``(inputs, targets)`` batches of the validation split.
        selection: the rule and its settings.
        default_range: (low, high) searched unless ``selection`` sets its own.
        start: where the ``"nll_tolerance"`` ladder starts (clipped into the range).
        ood_val_loader: a declared OOD validation set (inputs or ``(inputs, _)`` batches); only
            ``"ood_auroc"`` reads it, and it requires it.
        ignore_index: a label that counts nowhere (segmentation).
        io: how batches become model inputs and targets (`tradi.ModelIO`).
        reference: the predictor (inputs -> probabilities) whose validation NLL the bound is
            relative to; None: ``network`` alone. A multi-mode mixture passes its members'
            unperturbed average, so that the bound prices the spread, not the modes.

    Raises:
        ValueError: ``"ood_auroc"`` without ``ood_val_loader``, or a bad range.
    """
    if selection.rule == "ood_auroc" and ood_val_loader is None:
        raise ValueError(
            "rule 'ood_auroc' needs ood_val_loader: a declared OOD validation set (never the OOD "
            "test set); use rule 'nll_tolerance' when there is none"
        )
    started = time.perf_counter()
    low, high = selection.range(default_range)
    predict = reference if reference is not None else network_predict(network, io)
    reference_nll = score(predict, val_loader, ignore_index, io=io)[0]
    limit = None if selection.rule == "min_nll" else (1.0 + selection.tolerance) * reference_nll
    ood = ood_val_loader if selection.rule == "ood_auroc" else None

    def evaluate(scale: float, ensemble: SampledEnsemble) -> ScalePoint:
        nll, accuracy, auroc = score(ensemble, val_loader, ignore_index, ood, io)
        admissible = None if limit is None else nll <= limit
        return ScalePoint(scale, nll, accuracy, auroc, admissible)

    scorer = Scorer(make_ensemble, evaluate)
    if selection.rule == "min_nll":
        chosen = lowest_nll(scorer, low, high, selection.iterations)
        end = {low: "low", high: "high"}.get(chosen)
        note = f"the lowest validation NLL is at the range's {end} end {chosen:g}" if end else ""
    else:
        start = min(max(start, low), high)
        chosen, note = largest_within(scorer, low, high, start, selection.iterations)
        if selection.rule == "ood_auroc" and not note.startswith("no scale"):
            within = [p for p in scorer.points.values() if p.admissible]
            chosen = max(sorted(within, key=lambda p: p.scale), key=lambda p: p.val_auroc).scale
    search = ScaleSearch(
        scale=chosen,
        rule=selection.rule,
        reference_nll=reference_nll,
        nll_limit=limit,
        points=tuple(sorted(scorer.points.values(), key=lambda p: p.scale)),
        seconds=time.perf_counter() - started,
        note=note,
    )
    return search, scorer.ensemble(chosen)
