"""The one scale search (`tradi.selection`): each rule against closed-form NLL curves, and every
path that chooses a scale predicting with exactly the ensemble of the chosen scale; then the
tests written against the mutants that survived the first mutmut run on `selection.py` and
`_scale_search.py` (docs/testing.md): the ends of the accepted settings, the ladder's exact
rungs, the bracket of the golden-section search at both ends of the range and on ties, the
downward path of the bisection, labels that count nowhere, a custom `ModelIO`, the OOD set read
only by its rule, the wall time, and the one-ensemble cache of `Scorer`."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import Tensor, nn

from tradi import fit_ensemble
from tradi.methods import SamplingMethod, ScaleSelection, build_method
from tradi.plumbing.adapters import ModelIO
from tradi.selection import network_predict, search_scale
from tradi.selection.ladder import LADDER, Scorer, ladder, lowest_nll

TRAIN = {"epochs": 3, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 3}
REFERENCE_NLL = 0.1
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
RANGE = (0.01, 1000.0)


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


def _search(curve, selection, val=VAL, **kwargs):
    return search_scale(
        _ensembles(curve, kwargs.pop("ood", None)),
        _Constant(REFERENCE_NLL),
        val,
        selection,
        RANGE,
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


def _fresh(method: SamplingMethod, scale: float, loader) -> Tensor:
    """Predictions of an ensemble built afresh at ``scale``, bypassing the method's cache."""
    settings = method._ensemble_settings()
    return fit_ensemble(method._require_model(), method._posterior, scale=scale, **settings)[
        0
    ].predict(loader)


def _same_predictions(method: SamplingMethod, loader) -> None:
    """The method predicts with the ensemble of its noise_scale, and that scale is the search's;
    another searched scale predicts differently (so the comparison can fail), and setting
    noise_scale to it moves the predictions there (the kept ensemble is not reused)."""
    assert method.scale_search is not None
    chosen = method.noise_scale
    assert chosen == method.scale_search.scale
    expected = _fresh(method, chosen, loader)
    torch.testing.assert_close(method.predict(loader), expected, rtol=0, atol=0)
    other = max(p.scale for p in method.scale_search.points if p.scale != chosen)
    elsewhere = _fresh(method, other, loader)
    assert not torch.allclose(elsewhere, expected)
    method.noise_scale = other
    torch.testing.assert_close(method.predict(loader), elsewhere, rtol=0, atol=0)
    method.noise_scale = chosen
    torch.testing.assert_close(method.predict(loader), expected, rtol=0, atol=0)


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


# ---------------------------------------------------------------- tests written against mutants
def _nll(p: float) -> float:  # float32, as the metrics compute it
    return float(-torch.tensor(p).log())


# --- ScaleSelection ---------------------------------------------------------------------------


def test_zero_tolerance_and_zero_iterations_are_accepted() -> None:
    selection = ScaleSelection(tolerance=0.0, iterations=0)
    assert (selection.tolerance, selection.iterations) == (0.0, 0)


def test_a_high_end_below_one_is_accepted_with_the_default_low_end() -> None:
    assert ScaleSelection(high=0.5).range((1e-3, 10.0)) == (1e-3, 0.5)


@pytest.mark.parametrize("default", [(0.0, 10.0), (5.0, 5.0)])
def test_a_range_not_strictly_increasing_from_above_zero_is_refused(default) -> None:
    with pytest.raises(ValueError, match="0 < low < high"):
        ScaleSelection().range(default)
    with pytest.raises(ValueError, match="0 < low < high"):
        ScaleSelection(low=5.0, high=5.0)


# --- search_scale -----------------------------------------------------------------------------


def test_the_default_start_is_one() -> None:
    search = _search(lambda s: REFERENCE_NLL, ScaleSelection(iterations=0))
    assert [p.scale for p in search.points] == [1.0, 10.0, 100.0, 1000.0]


def test_ood_auroc_without_its_set_is_refused_with_the_whole_message() -> None:
    with pytest.raises(ValueError) as caught:
        _search(lambda s: REFERENCE_NLL, ScaleSelection("ood_auroc"))
    assert str(caught.value) == (
        "rule 'ood_auroc' needs ood_val_loader: a declared OOD validation set (never the OOD "
        "test set); use rule 'nll_tolerance' when there is none"
    )


def test_an_nll_exactly_at_the_bound_keeps_it() -> None:
    # the ensemble predicts exactly as the network: NLL == reference == the bound at tolerance 0
    network = _Constant(REFERENCE_NLL)
    search, _ = search_scale(
        lambda s: network_predict(network),
        network,
        VAL,
        ScaleSelection(tolerance=0.0),
        RANGE,
    )
    assert all(p.val_nll == search.nll_limit for p in search.points)
    assert all(p.admissible for p in search.points)
    assert search.scale == 1000.0 and "high end" in search.note


def test_points_record_the_accuracy() -> None:
    # class 0 probability above 1/2 up to the crossing, below it beyond: accuracy 1, then 0
    search = _search(lambda s: REFERENCE_NLL if s < 50 else 1.0, ScaleSelection(iterations=0))
    assert {p.scale: p.val_accuracy for p in search.points} == {1.0: 1.0, 10.0: 1.0, 100.0: 0.0}


def test_ignored_labels_count_nowhere_in_the_reference_or_the_ensembles() -> None:
    # 4 labels 0 and 4 ignored labels 1; with the ignored ones counted the NLLs would change
    val = [(torch.ones(8, 1), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))]
    search = _search(lambda s: 0.2, ScaleSelection(iterations=0), val=val, ignore_index=1)
    assert search.reference_nll == pytest.approx(REFERENCE_NLL, rel=1e-5)
    assert all(p.val_nll == pytest.approx(0.2, rel=1e-5) for p in search.points)
    assert all(p.val_accuracy == 1.0 for p in search.points)


def test_a_custom_io_reads_batches_for_the_reference_and_the_ensembles() -> None:
    # the batches store 1 - label and the network wraps its logits in a tuple: only the custom
    # io reads the labels 0 and the logits; the default one would score labels 1
    io = ModelIO(targets_fn=lambda b: 1 - b[1], output_fn=lambda o: o[0])

    class Wrapped(_Constant):
        def forward(self, x: Tensor):
            return (super().forward(x), None)

    val = [(torch.ones(8, 1), torch.ones(8, dtype=torch.long))]
    search, _ = search_scale(
        _ensembles(lambda s: 0.2), Wrapped(REFERENCE_NLL), val, ScaleSelection(iterations=0),
        RANGE, io=io,
    )  # fmt: skip
    assert search.reference_nll == pytest.approx(REFERENCE_NLL, rel=1e-5)
    assert all(p.val_nll == pytest.approx(0.2, rel=1e-5) for p in search.points)


def test_an_ood_set_is_read_only_by_the_ood_rule() -> None:
    def curve(s: float) -> float:
        return REFERENCE_NLL * (1 + 0.1 * (s / 37.0) ** 2)

    ood = [(-torch.ones(8, 1), torch.zeros(8, dtype=torch.long))]
    for rule in ("nll_tolerance", "min_nll"):
        search = _search(curve, ScaleSelection(rule), ood_val_loader=ood)
        assert all(p.val_auroc is None for p in search.points)


def test_ood_rule_when_no_scale_keeps_the_bound_returns_the_low_end() -> None:
    ood = [(-torch.ones(8, 1), torch.zeros(8, dtype=torch.long))]
    search = _search(lambda s: 2 * REFERENCE_NLL, ScaleSelection("ood_auroc"), ood_val_loader=ood)
    assert search.scale == RANGE[0] and search.note.startswith("no scale keeps the NLL bound")


def test_min_nll_has_no_note_and_the_time_is_the_wall_time() -> None:
    before = time.perf_counter()
    search = _search(lambda s: REFERENCE_NLL + math.log(s / 3.0) ** 2, ScaleSelection("min_nll"))
    elapsed = time.perf_counter() - before
    assert search.note == ""
    assert isinstance(search.seconds, float) and 0.0 <= search.seconds <= elapsed


@pytest.mark.parametrize("increasing", [True, False])
def test_min_nll_at_an_end_of_the_range_says_so(increasing: bool) -> None:
    """A flat or monotone NLL puts the minimum at an end: fit_ensemble warns on the note."""
    sign = 1.0 if increasing else -1.0
    search = _search(lambda s: REFERENCE_NLL + 0.01 * sign * math.log(s), ScaleSelection("min_nll"))
    end, value = ("low", RANGE[0]) if increasing else ("high", RANGE[1])
    assert search.scale == value
    assert search.note == f"the lowest validation NLL is at the range's {end} end {value:g}"


def test_bisection_from_a_start_above_the_crossing_goes_down_first() -> None:
    crossing = 37.0
    search = _search(
        lambda s: REFERENCE_NLL * (1 + 0.1 * (s / crossing) ** 2),
        ScaleSelection(iterations=6),
        start=500.0,
    )
    # down by factors of 10 from 500 to 50 (over) and 5 (within), then 6 bisections of [5, 50]
    assert [p.scale for p in search.points][:1] == [5.0]
    assert {500.0, 50.0, 5.0} <= {p.scale for p in search.points}
    assert len(search.points) == 3 + 6
    assert crossing / 10 ** (1 / 64) <= search.scale <= crossing
    assert search.note == ""


# --- _scale_search.ladder and lowest_nll ------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "rungs"),
    [
        (0.01, 1000.0, [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]),
        (1.0, 1000.0, [1.0, 10.0, 100.0, 1000.0]),
        (0.5, 20.0, [0.5, 5.0, 20.0]),
        (2.0, 3.0, [2.0, 3.0]),
    ],
)
def test_ladder_rungs(low, high, rungs) -> None:
    assert ladder(low, high) == rungs


class _Counting:
    """A scorer over a closed-form NLL curve that records the scales it was asked for."""

    def __init__(self, curve) -> None:
        self.curve = curve

        def evaluate(scale, ensemble):
            from tradi.selection import ScalePoint

            return ScalePoint(scale, curve(scale), 1.0)

        self.scorer = Scorer(lambda s: s, evaluate)


def _probes(a: float, b: float) -> tuple[float, float]:
    """The first golden-section pair inside [a, b] in log scale."""
    la, lb = math.log(a), math.log(b)
    return math.exp(lb - GOLDEN * (lb - la)), math.exp(la + GOLDEN * (lb - la))


@pytest.mark.parametrize(
    ("curve", "bracket"),
    [
        (lambda s: math.log(s / 1.3) ** 2, (0.1, 10.0)),  # best rung 1: its two neighbours
        (lambda s: s, (0.01, 0.1)),  # best rung the low end: [low, 10 low]
        (lambda s: -s, (100.0, 1000.0)),  # best rung the high end: [high / 10, high]
    ],
)
def test_golden_section_starts_between_the_best_rungs_neighbours(curve, bracket) -> None:
    counting = _Counting(curve)
    lowest_nll(counting.scorer, *RANGE, iterations=1)
    probes = sorted(set(counting.scorer.points) - set(ladder(*RANGE)))
    assert probes == pytest.approx(sorted(_probes(*bracket)), rel=1e-12)


def test_golden_section_ties_keep_the_lower_part_of_the_bracket() -> None:
    counting = _Counting(lambda s: 1.0)  # flat: every comparison is a tie
    chosen = lowest_nll(counting.scorer, *RANGE, iterations=3)
    assert chosen == RANGE[0]  # ties go to the smaller scale
    low_probe, high_probe = _probes(RANGE[0], RANGE[0] * LADDER)
    # on a tie the bracket becomes [a, d]: no later probe lies above the first pair's upper one
    probes = set(counting.scorer.points) - set(ladder(*RANGE))
    assert max(probes) == pytest.approx(high_probe, rel=1e-12)
    assert min(probes) < low_probe


# --- _scale_search.Scorer ---------------------------------------------------------------------


class _Builds:
    def __init__(self, fail_at: float | None = None) -> None:
        self.built: list[float] = []
        self.fail_at = fail_at

    def __call__(self, scale: float):
        if scale == self.fail_at:
            raise RuntimeError("out of memory")
        self.built.append(scale)
        return ("ensemble", scale)


def _scorer(builds: _Builds) -> Scorer:
    from tradi.selection import ScalePoint

    return Scorer(builds, lambda scale, ensemble: ScalePoint(scale, scale, 1.0))


def test_scorer_keeps_the_last_ensemble_and_rebuilds_any_other() -> None:
    builds = _Builds()
    scorer = _scorer(builds)
    assert scorer.ensemble(3.0) == ("ensemble", 3.0)  # nothing built yet: built now
    scorer(1.0)
    scorer(2.0)
    scorer(1.0)  # scored already: neither rebuilt nor made the last
    assert builds.built == [3.0, 1.0, 2.0]
    assert scorer.ensemble(2.0) == ("ensemble", 2.0)  # the last built: no rebuild
    assert builds.built == [3.0, 1.0, 2.0]
    assert scorer.ensemble(1.0) == ("ensemble", 1.0)  # rebuilt
    assert scorer.ensemble(1.0) == ("ensemble", 1.0)  # the rebuilt one is not kept
    assert builds.built == [3.0, 1.0, 2.0, 1.0, 1.0]


def test_scorer_after_a_failed_build_rebuilds() -> None:
    builds = _Builds(fail_at=2.0)
    scorer = _scorer(builds)
    scorer(1.0)
    with pytest.raises(RuntimeError):
        scorer(2.0)
    assert scorer.ensemble(1.0) == ("ensemble", 1.0)  # the previous one was released
    assert builds.built == [1.0, 1.0]


def test_search_returns_the_last_built_ensemble_without_rebuilding_it() -> None:
    built: list[float] = []
    make = _ensembles(lambda s: REFERENCE_NLL)

    def counting(scale: float):
        built.append(scale)
        return make(scale)

    search_scale(counting, _Constant(REFERENCE_NLL), VAL, ScaleSelection(iterations=0), RANGE)
    assert built == [1.0, 10.0, 100.0, 1000.0]  # the chosen 1000 was the last built


# --- network_predict --------------------------------------------------------------------------


def test_network_predict_moves_inputs_to_the_models_device() -> None:
    model = nn.Linear(3, 2).to(torch.device("meta"))
    probs = network_predict(model)(torch.ones(4, 3))
    assert probs.device == torch.device("meta") and probs.shape == (4, 2)
