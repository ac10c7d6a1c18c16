"""The one scale search (`tradi.selection`): each rule against closed-form NLL curves, and every
path that chooses a scale predicting with exactly the ensemble of the chosen scale."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tradi import fit_ensemble
from tradi.methods import SamplingMethod, ScaleSelection, build_method
from tradi.selection import search_scale

TRAIN = {"epochs": 3, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 3}
REFERENCE_NLL = 0.1


class _Constant(nn.Module):
    """Two-class 'network' giving class 0 probability exp(-nll) for every input."""

    def __init__(self, nll: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        p = math.exp(-nll)
        self.logits = torch.tensor([math.log(p), math.log(1 - p)])

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(len(x), 2)


def _ensembles(curve, ood_confidence=None):
    """scale -> a predictor whose validation NLL is curve(scale) (labels all 0); OOD inputs
    (marked by a negative first feature) get class-0 probability ood_confidence(scale)."""

    def make(scale: float):
        p_in = math.exp(-curve(scale))

        def predict(x: Tensor) -> Tensor:
            p = torch.full((len(x),), p_in)
            if ood_confidence is not None:
                p = torch.where(x[:, 0] < 0, torch.tensor(ood_confidence(scale)), p)
            return torch.stack([p, 1 - p], dim=1)

        return predict

    return make


# validation: labels 0, confidences differing per input so that AUROCs are not all ties
VAL = [(torch.ones(8, 1), torch.zeros(8, dtype=torch.long))]
OOD = [(-torch.ones(8, 1), torch.zeros(8, dtype=torch.long))]


def _search(curve, selection, **kwargs):
    return search_scale(
        _ensembles(curve, kwargs.pop("ood", None)),
        _Constant(REFERENCE_NLL),
        VAL,
        selection,
        (0.01, 1000.0),
        **kwargs,
    )[0]


def test_nll_tolerance_finds_the_crossing_by_bisection_in_log_scale() -> None:
    crossing = 37.0  # NLL = reference * (1 + 0.1 * (s / crossing)^2): 1.1 x reference at 37
    search = _search(
        lambda s: REFERENCE_NLL * (1 + 0.1 * (s / crossing) ** 2), ScaleSelection(iterations=6)
    )
    assert search.nll_limit == pytest.approx(1.1 * REFERENCE_NLL, rel=1e-6)
    assert search.reference_nll == pytest.approx(REFERENCE_NLL, rel=1e-5)
    # the answer keeps the bound and lies within one bisection step (10^(1/64)) below it
    assert crossing / 10 ** (1 / 64) <= search.scale <= crossing
    assert len(search.points) == 3 + 6  # the ladder from 1: 1, 10, 100, then 6 bisections
    assert all(p.admissible == (p.val_nll <= search.nll_limit) for p in search.points)


def test_nll_tolerance_at_the_ends_of_the_range() -> None:
    flat = _search(lambda s: REFERENCE_NLL, ScaleSelection())
    assert flat.scale == 1000.0 and "high end" in flat.note
    bad = _search(lambda s: 2 * REFERENCE_NLL, ScaleSelection())
    assert bad.scale == 0.01 and "no scale keeps" in bad.note


def test_min_nll_finds_the_minimum_by_golden_section() -> None:
    best = 3.0  # NLL grows with the squared log distance to 3
    search = _search(
        lambda s: REFERENCE_NLL + math.log(s / best) ** 2, ScaleSelection("min_nll", iterations=12)
    )
    assert search.nll_limit is None and all(p.admissible is None for p in search.points)
    assert search.scale == pytest.approx(best, rel=0.01)


def test_ood_auroc_takes_the_best_separation_within_the_bound() -> None:
    def curve(s: float) -> float:
        return REFERENCE_NLL * (1 + 0.1 * (s / 37.0) ** 2)

    # OOD confidence falls with the scale: larger scales separate better, so the answer is the
    # largest scale within the bound; ties (all separated) go to the smaller scale
    search = _search(
        curve,
        ScaleSelection("ood_auroc"),
        ood=lambda s: max(0.0, math.exp(-curve(s)) - s),
        ood_val_loader=OOD,
    )
    within = [p for p in search.points if p.admissible]
    assert all(p.val_auroc is not None for p in search.points)
    best = max(p.val_auroc for p in within)
    assert search.scale == min(p.scale for p in within if p.val_auroc == best)
    with pytest.raises(ValueError, match="needs ood_val_loader"):
        _search(curve, ScaleSelection("ood_auroc"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "largest"}, "rule must be one of"),
        ({"tolerance": -0.1}, "tolerance and iterations must be >= 0"),
        ({"iterations": -1}, "tolerance and iterations must be >= 0"),
        ({"low": 10.0, "high": 1.0}, "0 < low < high"),
    ],
)
def test_bad_selections_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ScaleSelection(**kwargs)


def _same_predictions(method: SamplingMethod, loader) -> None:
    """The method predicts with the ensemble of its noise_scale, and that scale is the search's;
    another searched scale predicts differently (so the comparison can fail)."""
    assert method.scale_search is not None
    assert method.noise_scale == method.scale_search.scale
    expected = method.ensemble(method.noise_scale).predict(loader)
    torch.testing.assert_close(method.predict(loader), expected, rtol=0, atol=0)
    others = [p.scale for p in method.scale_search.points if p.scale != method.noise_scale]
    assert not torch.allclose(method.ensemble(max(others)).predict(loader), expected)


def test_every_selection_path_predicts_with_the_chosen_scale(
    model_factory, train_loader, val_loader
) -> None:
    selection = ScaleSelection(iterations=3, low=1.0, high=1e4)
    tradi = build_method(
        "tradi", model_factory, train=TRAIN, n_samples=3, covariance="diag", selection=selection
    )
    tradi.fit(train_loader, val_loader)  # path 1: scale="auto" inside fit
    assert isinstance(tradi, SamplingMethod)
    _same_predictions(tradi, val_loader)
    chosen_in_fit = tradi.noise_scale

    # path 2: the runner's call, another rule, after fit
    tradi.select_scale(val_loader, ScaleSelection("min_nll", iterations=2, low=1.0, high=1e4))
    assert tradi.scale_search is not None and tradi.scale_search.rule == "min_nll"
    _same_predictions(tradi, val_loader)

    # path 3: saved and restored (loadable with weights_only=True)
    state = tradi.state_dict()
    restored = build_method("tradi", model_factory, train=TRAIN, n_samples=3, covariance="diag")
    assert isinstance(restored, SamplingMethod)
    restored.load_state_dict(state)
    restored.bn_loader = tradi.bn_loader
    assert restored.noise_scale == tradi.noise_scale
    assert restored.scale_search == tradi.scale_search
    _same_predictions(restored, val_loader)
    torch.testing.assert_close(restored.predict(val_loader), tradi.predict(val_loader))

    # path 4: the one-call API on the same trained network and tracker
    assert tradi.model is not None and tradi.tracker is not None
    tracker = tradi.tracker

    def family(s: float):
        return tracker.posterior("diag", scale=s)

    ensemble, search = fit_ensemble(
        tradi.model,
        family,
        val_loader,
        selection=selection,
        n_samples=3,
        seed=3,
        bn_loader=tradi.bn_loader,
    )
    assert search is not None and search.scale == chosen_in_fit
    again, none = fit_ensemble(
        tradi.model, family, scale=search.scale, n_samples=3, seed=3, bn_loader=tradi.bn_loader
    )
    assert none is None
    torch.testing.assert_close(ensemble.predict(val_loader), again.predict(val_loader))
    torch.testing.assert_close(
        ensemble.predict(val_loader), tradi.ensemble(chosen_in_fit).predict(val_loader)
    )


def test_fit_ensemble_refuses_bad_input(model_factory, val_loader) -> None:
    model = model_factory()
    with pytest.raises(ValueError, match="pass val_loader"):
        fit_ensemble(model, lambda s: None)
    with pytest.raises(ValueError, match="a number >= 0 or 'auto'"):
        fit_ensemble(model, lambda s: None, scale=-1.0)
    with pytest.raises(TypeError, match="WeightTracker or a function"):
        fit_ensemble(model, 3.0, val_loader)  # type: ignore[arg-type]
