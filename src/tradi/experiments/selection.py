"""Choosing a sampling method's noise scale on validation data, the same way for every method.

TRADI's tracked deviations are tiny at the end of a step schedule (TRADI.md §4c), so its scale
matters as much as Gaussian perturbation's sigma or SWAG's covariance scale. Choosing any of
them on the OOD *test* set would be cheating; this module only ever sees the validation split
and the benchmark's declared ``ood_val`` set (Fashion-MNIST for MNIST/notMNIST).

Criterion ``val_ood_auroc``: among the grid values whose validation NLL is at most
``(1 + nll_tolerance)`` x the trained network's own validation NLL (the deterministic network the
samples are drawn around), take the one with the largest AUROC of MCP scores, validation
in-distribution vs ``ood_val``; ties go to the smaller scale. The NLL bound keeps a scale that
separates OOD data by ruining the in-distribution predictions from being chosen. When no value
satisfies the bound, or there is no ``ood_val`` set, the criterion is ``val_nll``: the lowest
validation NLL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tradi.experiments.config import ScaleSelectionConfig
from tradi.experiments.evaluation import mean_probs, predictor
from tradi.methods import SamplingMethod
from tradi.methods.base import batch_inputs
from tradi.metrics import nll, ood_metrics

#: Per method with a noise knob: (option holding it, option holding its grid, untuned default).
#: Gaussian perturbation has no natural default: its sigma is always chosen.
SCALE_OPTIONS: dict[str, tuple[str, str, float | None]] = {
    "tradi": ("scale", "scale_grid", 1.0),
    "gaussian_perturbation": ("sigma", "sigma_grid", None),
    "swag": ("covariance_scale", "covariance_scale_grid", 0.5),
}


@dataclass(frozen=True)
class ScaleChoice:
    """The chosen scale, the criterion actually applied and every grid value's scores."""

    scale: float
    criterion: str
    reference_nll: float
    nll_limit: float | None
    grid: list[dict[str, Any]]
    seconds: float


def _network_predictor(method: SamplingMethod) -> Any:
    """The trained network alone, one deterministic pass (eval mode)."""
    model = method.model
    if model is None:
        raise RuntimeError(f"{method.name}: fit the method before choosing its scale")

    @torch.no_grad()
    def iterate(loader: Iterable[Any]) -> Iterator[Tensor]:
        model.eval()
        for batch in loader:
            yield model(batch_inputs(batch).to(method.device)).softmax(dim=1).unsqueeze(0).cpu()

    return iterate


def _labels(loader: Iterable[Any]) -> Tensor:
    return torch.cat([targets for _, targets in loader])


def pick_scale(rows: list[dict[str, Any]], nll_limit: float | None) -> tuple[float, str]:
    """The decision rule alone, over grid rows sorted by scale: the largest ``val_auroc`` among
    rows with ``val_nll <= nll_limit`` (ties: the first), else the lowest ``val_nll``. Marks
    each row ``admissible`` (None without a limit) and returns (scale, criterion applied)."""
    for row in rows:
        row["admissible"] = None if nll_limit is None else row["val_nll"] <= nll_limit
    admissible = [row for row in rows if row["admissible"]]
    if admissible:
        return max(admissible, key=lambda r: r["val_auroc"])["scale"], "val_ood_auroc"
    return min(rows, key=lambda r: r["val_nll"])["scale"], "val_nll"


def choose_noise_scale(
    method: SamplingMethod,
    grid: Sequence[float],
    val_loader: Iterable[Any],
    ood_val_loader: Iterable[Any] | None,
    config: ScaleSelectionConfig,
    ignore_index: int | None = None,
) -> ScaleChoice:
    """Score every grid value on validation data and return the choice (module docstring)."""
    if not grid:
        raise ValueError(f"{method.name}: the scale grid is empty")
    started = time.perf_counter()
    labels = _labels(val_loader)
    reference_nll = float(
        nll(mean_probs(_network_predictor(method), val_loader), labels, ignore_index)
    )
    use_ood = config.criterion == "val_ood_auroc" and ood_val_loader is not None
    rows: list[dict[str, Any]] = []
    for scale in sorted(float(s) for s in grid):
        predict = predictor(method, scale)
        probs = mean_probs(predict, val_loader)
        row: dict[str, Any] = {"scale": scale, "val_nll": float(nll(probs, labels, ignore_index))}
        if use_ood:
            scores_in = probs.max(dim=1).values
            scores_out = mean_probs(predict, ood_val_loader).max(dim=1).values  # type: ignore[arg-type]
            row["val_auroc"] = ood_metrics(scores_in, scores_out)["auroc"]
        rows.append(row)
    nll_limit = (1.0 + config.nll_tolerance) * reference_nll if use_ood else None
    best, criterion = pick_scale(rows, nll_limit)
    return ScaleChoice(
        scale=best,
        criterion=criterion,
        reference_nll=reference_nll,
        nll_limit=nll_limit,
        grid=rows,
        seconds=time.perf_counter() - started,
    )
