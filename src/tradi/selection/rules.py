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

Every scale draws its weight sets from the same seed: scales differ by the scale alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Rule = Literal["nll_tolerance", "min_nll", "ood_auroc"]
RULES: tuple[Rule, ...] = ("nll_tolerance", "min_nll", "ood_auroc")


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
        if self.tolerance < 0 or self.iterations < 0:
            raise ValueError(
                f"tolerance and iterations must be >= 0, got {self.tolerance}, {self.iterations}"
            )
        self.range((1e-300, math.inf))

    def range(self, default: tuple[float, float]) -> tuple[float, float]:
        """The search range: ``low``/``high`` where set, else ``default``'s ends; refuses a
        range that is not 0 < low < high."""
        low, high = self.low or default[0], self.high or default[1]
        if not 0.0 < low < high:
            raise ValueError(f"the scale search range needs 0 < low < high, got ({low}, {high})")
        return low, high


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


def scale_search_from_dict(state: dict[str, Any]) -> ScaleSearch:
    """`ScaleSearch` back from ``dataclasses.asdict``'s output (a saved state: a method's, an
    `Exploration`'s). Raises TypeError for a field `ScaleSearch` or `ScalePoint` lacks."""
    points = tuple(ScalePoint(**point) for point in state["points"])
    return ScaleSearch(**{**state, "points": points})
