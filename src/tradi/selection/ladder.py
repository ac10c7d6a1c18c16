"""The searches behind `tradi.selection.rules`' rules: scoring scales on validation data, the
factor-10 ladder, bisection and golden-section steps in log scale (rules documented there)."""

from __future__ import annotations

import math
from collections.abc import Callable

from tradi.inference.ensemble import SampledEnsemble
from tradi.selection.rules import ScalePoint

LADDER = 10.0  # the coarse search's step factor
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class Scorer:
    """Builds ensembles and scores them (``evaluate``: scale, ensemble -> point), once per
    scale; only the last ensemble built is kept (memory: one ensemble), so the chosen one is
    rebuilt if it was not the last."""

    def __init__(
        self,
        make_ensemble: Callable[[float], SampledEnsemble],
        evaluate: Callable[[float, SampledEnsemble], ScalePoint],
    ) -> None:
        self.make_ensemble, self.evaluate = make_ensemble, evaluate
        self.points: dict[float, ScalePoint] = {}
        self.last: tuple[float, SampledEnsemble] | None = None

    def __call__(self, scale: float) -> ScalePoint:
        if scale in self.points:
            return self.points[scale]
        self.last = None  # release the previous ensemble before building the next
        ensemble = self.make_ensemble(scale)
        self.last = (scale, ensemble)
        self.points[scale] = self.evaluate(scale, ensemble)
        return self.points[scale]

    def ensemble(self, scale: float) -> SampledEnsemble:
        """The ensemble of ``scale``: the last one built, or built again (deterministic)."""
        if self.last is not None and self.last[0] == scale:
            return self.last[1]
        self.last = None
        return self.make_ensemble(scale)


def round_scale(scale: float) -> float:
    """12 significant digits: 0.01 x 10 is 0.1, not 0.10000000000000002."""
    return float(f"{scale:.12g}")


def ladder(low: float, high: float) -> list[float]:
    """low, 10 low, 100 low, ... and high itself last."""
    steps = math.ceil(math.log(high / low, LADDER) - 1e-9)
    return [min(round_scale(low * LADDER**k), high) for k in range(steps + 1)]


def largest_within(
    scorer: Scorer, low: float, high: float, start: float, iterations: int
) -> tuple[float, str]:
    """A scale within the NLL bound next to its first crossing from ``start``: factor-10 steps
    up while the bound holds (down until it holds), then bisection in log scale."""
    if scorer(start).admissible:
        within = start
        while within < high:
            step = min(round_scale(within * LADDER), high)
            if not scorer(step).admissible:
                over = step
                break
            within = step
        else:
            return high, f"every scale up to the range's high end {high:g} keeps the NLL bound"
    else:
        over = start
        while over > low:
            step = max(round_scale(over / LADDER), low)
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


def lowest_nll(scorer: Scorer, low: float, high: float, iterations: int) -> float:
    """The lowest validation NLL: the ladder, then golden-section steps in log scale."""
    steps = ladder(low, high)
    best = min(range(len(steps)), key=lambda i: scorer(steps[i]).val_nll)
    a = math.log(steps[max(best - 1, 0)])
    b = math.log(steps[min(best + 1, len(steps) - 1)])
    for _ in range(iterations):
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        if scorer(math.exp(c)).val_nll <= scorer(math.exp(d)).val_nll:
            b = d
        else:
            a = c
    return min(scorer.points.values(), key=lambda p: (p.val_nll, p.scale)).scale
