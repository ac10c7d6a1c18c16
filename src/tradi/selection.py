"""Choosing a weight posterior's noise scale on validation data: ONE search for every path.

The library (`fit_ensemble`, ``SamplingMethod.select_scale``, a sampling method's ``fit`` with
``scale="auto"``) and the experiment runner all call `search_scale`, so they share one result
type (`ScaleSearch`), one meaning of ``"auto"`` and one meaning of the knob.

**The knob.** Every sampling posterior here is a Gaussian around trained weights, and ``scale``
multiplies its standard deviation (its covariance by scale²): TRADI's tracked deviations, SWAG's
deviations (``scale`` = sqrt of SWAG's own covariance factor, so SWAG's 0.5 is ~0.707), and for
the Gaussian perturbation ensemble a reference deviation equal to each tensor's root mean square
weight. 0 gives the posterior's mean; the chosen value is a factor, not a unit-bearing sigma.

**The rules** (`ScaleSelection.rule`), all on the validation split only:

- ``"nll_tolerance"`` (default; needs no OOD data): the largest scale in the search range whose
  ensemble's validation NLL is at most ``(1 + tolerance)`` x the trained network's own validation
  NLL. The widest ensemble the in-distribution data accepts, at a declared price in NLL. Search:
  from a start scale (the method's untuned value; 1 in `fit_ensemble`) by factors of 10, up
  while the bound holds or down until it does, then ``iterations`` bisections in log scale
  between the last scale within the bound and the first over it (resolution
  10^(1/2^iterations), 15% with the default 4). NLL need not be monotone: the answer is a scale
  within the bound next to a crossing, the first one met from the start.
- ``"min_nll"``: the lowest validation NLL: the factor-10 ladder over the whole range, then
  ``iterations`` golden-section steps in log scale around its best point.
- ``"ood_auroc"`` (explicit option; needs a declared OOD validation set, never the OOD test
  set): the ``"nll_tolerance"`` search, then among the scales it evaluated that keep the NLL
  bound, the highest AUROC of the maximum class probability, validation in-distribution data
  against ``ood_val_loader``; ties go to the smaller scale.

When even the low end breaks the NLL bound, the low end is returned and `ScaleSearch.note` says
so. Every evaluated scale draws its weight sets from the same seed, so scales differ by the
scale alone and the ensemble of a scale is the same whenever it is built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tradi.ensemble import SampledEnsemble
from tradi.metrics import ClassificationMetrics, OODMetrics

Rule = Literal["nll_tolerance", "min_nll", "ood_auroc"]
RULES: tuple[Rule, ...] = ("nll_tolerance", "min_nll", "ood_auroc")
_LADDER = 10.0  # the coarse search's step factor
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class ScaleSelection:
    """How ``scale="auto"`` is resolved (module docstring).

    ``tolerance``: the NLL price accepted by ``"nll_tolerance"`` and ``"ood_auroc"``, as a
    fraction of the trained network's validation NLL; fixed at 0.10 before any study run
    (docs/selection.md). ``iterations``: refinement steps after the factor-10 ladder.
    ``low``/``high``: the search range; None takes the method's or caller's default range.

    Raises:
        ValueError: an unknown rule, a negative tolerance, iterations < 0, or a range that is
            not 0 < low < high.
    """

    rule: Rule = "nll_tolerance"
    tolerance: float = 0.10
    iterations: int = 4
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.low is not None or self.high is not None:
            check_range((self.low or 0.0, self.high or math.inf))

    def range(self, default: tuple[float, float]) -> tuple[float, float]:
        """The search range: ``low``/``high`` where set, else ``default``'s ends."""
        bounds = (self.low or default[0], self.high or default[1])
        check_range(bounds)
        return bounds


def check_range(bounds: tuple[float, float]) -> None:
    """Refuse a search range that is not 0 < low < high."""
    low, high = bounds
    if not 0.0 < low < high:
        raise ValueError(f"the scale search range needs 0 < low < high, got ({low}, {high})")


@dataclass(frozen=True)
class ScalePoint:
    """One evaluated scale: validation NLL and accuracy of the ensemble's averaged prediction,
    the AUROC against the OOD validation set (``"ood_auroc"`` only) and whether the NLL keeps
    the bound (None for ``"min_nll"``, which has none)."""

    scale: float
    val_nll: float
    val_accuracy: float
    val_auroc: float | None = None
    admissible: bool | None = None


@dataclass(frozen=True)
class ScaleSearch:
    """The chosen ``scale``, the rule applied, the trained network's validation NLL, the NLL
    bound (None for ``"min_nll"``), every evaluated point in increasing scale, the wall time in
    seconds and a note when the range's end decided the choice."""

    scale: float
    rule: Rule
    reference_nll: float
    nll_limit: float | None
    points: tuple[ScalePoint, ...]
    seconds: float
    note: str = ""


class _Scorer:
    """Builds and scores ensembles on the validation data, keeping the best one built so far."""

    def __init__(
        self,
        make_ensemble: Callable[[float], SampledEnsemble],
        val_loader: Iterable[Any],
        ood_val_loader: Iterable[Any] | None,
        ignore_index: int | None,
        nll_limit: float | None,
    ) -> None:
        self.make_ensemble = make_ensemble
        self.val_loader, self.ood_val_loader = val_loader, ood_val_loader
        self.ignore_index, self.nll_limit = ignore_index, nll_limit
        self.points: dict[float, ScalePoint] = {}
        self.ensembles: dict[float, SampledEnsemble] = {}

    def __call__(self, scale: float) -> ScalePoint:
        if scale in self.points:
            return self.points[scale]
        ensemble = self.make_ensemble(scale)
        nll, accuracy, auroc = score(
            ensemble, self.val_loader, self.ignore_index, self.ood_val_loader
        )
        admissible = None if self.nll_limit is None else nll <= self.nll_limit
        point = ScalePoint(scale, nll, accuracy, auroc, admissible)
        self.points[scale] = point
        self.ensembles[scale] = ensemble
        return point

    def keep_only(self, scale: float) -> SampledEnsemble:
        """The ensemble of ``scale``, every other one released."""
        ensemble = self.ensembles[scale]
        self.ensembles = {scale: ensemble}
        return ensemble


@torch.no_grad()
def score(
    predict: Callable[[Tensor], Tensor],
    loader: Iterable[Any],
    ignore_index: int | None = None,
    ood_loader: Iterable[Any] | None = None,
) -> tuple[float, float, float | None]:
    """(mean NLL, accuracy, AUROC or None) of ``predict``'s probabilities [N, C, ...] over
    ``(inputs, targets)`` batches; the AUROC (max class probability, in-distribution positive)
    only when ``ood_loader`` is given. Labels equal to ``ignore_index`` count nowhere."""
    metrics = ClassificationMetrics(ignore_index=ignore_index)
    ood = OODMetrics() if ood_loader is not None else None
    for inputs, targets in loader:
        probs = predict(inputs).cpu()
        metrics.update(probs, targets)
        if ood is not None:
            valid = None if ignore_index is None else targets != ignore_index
            ood.update(probs.max(dim=1).values, False, valid)
    auroc = None
    if ood is not None:
        assert ood_loader is not None
        for batch in ood_loader:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            ood.update(predict(inputs).cpu().max(dim=1).values, True)
        auroc = float(ood.compute()["auroc"])
    values = metrics.compute()
    return float(values["nll"]), float(values["accuracy"]), auroc


def network_predict(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """The trained network alone, in eval mode: softmax probabilities of one pass."""
    device = next(model.parameters()).device

    def predict(inputs: Tensor) -> Tensor:
        return model.eval()(inputs.to(device)).softmax(dim=1)

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
    reference = score(network_predict(network), val_loader, ignore_index)[0]
    limit = None if selection.rule == "min_nll" else (1.0 + selection.tolerance) * reference
    ood = ood_val_loader if selection.rule == "ood_auroc" else None
    scorer = _Scorer(make_ensemble, val_loader, ood, ignore_index, limit)
    if selection.rule == "min_nll":
        chosen, note = _lowest_nll(scorer, low, high, selection.iterations), ""
    else:
        start = min(max(start, low), high)
        chosen, note = _largest_within(scorer, low, high, start, selection.iterations)
        if selection.rule == "ood_auroc" and not note.startswith("no scale"):
            within = [p for p in scorer.points.values() if p.admissible]
            chosen = max(sorted(within, key=lambda p: p.scale), key=lambda p: p.val_auroc).scale
    search = ScaleSearch(
        scale=chosen,
        rule=selection.rule,
        reference_nll=reference,
        nll_limit=limit,
        points=tuple(sorted(scorer.points.values(), key=lambda p: p.scale)),
        seconds=time.perf_counter() - started,
        note=note,
    )
    return search, scorer.keep_only(chosen)


def _round(scale: float) -> float:
    """12 significant digits: 0.01 x 10 is 0.1, not 0.10000000000000002."""
    return float(f"{scale:.12g}")


def _ladder(low: float, high: float) -> list[float]:
    """low, 10 low, 100 low, ... and high itself last."""
    steps = math.ceil(math.log(high / low, _LADDER) - 1e-9)
    return [min(_round(low * _LADDER**k), high) for k in range(steps + 1)]


def _largest_within(
    scorer: _Scorer, low: float, high: float, start: float, iterations: int
) -> tuple[float, str]:
    """A scale within the NLL bound next to its first crossing from ``start``: factor-10 steps
    up while the bound holds (down until it holds), then bisection in log scale."""
    if scorer(start).admissible:
        within = start
        while within < high:
            step = min(_round(within * _LADDER), high)
            if not scorer(step).admissible:
                over = step
                break
            within = step
        else:
            return high, f"every scale up to the range's high end {high:g} keeps the NLL bound"
    else:
        over = start
        while over > low:
            step = max(_round(over / _LADDER), low)
            if scorer(step).admissible:
                within = step
                break
            over = step
        else:
            return low, f"no scale keeps the NLL bound; the range's low end {low:g} is returned"
    for _ in range(iterations):
        middle = math.sqrt(within * over)
        if scorer(middle).admissible:
            within = middle
        else:
            over = middle
    return within, ""


def _lowest_nll(scorer: _Scorer, low: float, high: float, iterations: int) -> float:
    """The lowest validation NLL: the ladder, then golden-section steps in log scale."""
    ladder = _ladder(low, high)
    best = min(range(len(ladder)), key=lambda i: scorer(ladder[i]).val_nll)
    a = math.log(ladder[max(best - 1, 0)])
    b = math.log(ladder[min(best + 1, len(ladder) - 1)])
    for _ in range(iterations):
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        if scorer(math.exp(c)).val_nll <= scorer(math.exp(d)).val_nll:
            b = d
        else:
            a = c
    return min(scorer.points.values(), key=lambda p: (p.val_nll, p.scale)).scale
