"""The OOD-score registry against independent NumPy / SciPy recomputations and closed forms.

Tolerances: float64 inputs agree with float64 NumPy to 1e-12 (relative) / 1e-12 (absolute, for
values near 0); float16 inputs are compared, as float32 results, with NumPy on the same
float16 values widened to float64, to 1e-5.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from tradi.metrics import (
    OOD_SCORES,
    SCORE_ALIASES,
    available_scores,
    ood_score,
    ood_scores,
    uncertainty_scores,
    variation_ratio,
)

LOGIT_SCORES = {"logit", "energy", "ensemble_energy"}
ENSEMBLE_ONLY = {"mutual_information", "variation_ratio", "variance"}


def _logits(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * 2).to(dtype)


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)


def _variation_ratio(votes: np.ndarray) -> np.ndarray:
    """votes [S, ...] -> 1 - (count of the modal class) / S, position by position."""
    flat = votes.reshape(votes.shape[0], -1)
    modal = np.array([np.bincount(column).max() for column in flat.T])
    return (1 - modal / votes.shape[0]).reshape(votes.shape[1:])


def numpy_prob_scores(p: np.ndarray, votes: np.ndarray) -> dict[str, np.ndarray]:
    """The probability criteria, higher = in-distribution, from probabilities [S, N, C, *]."""
    mean = p.mean(axis=0)
    total = _entropy(mean, axis=1)
    return {
        "msp": mean.max(axis=1),
        "entropy": -total,
        "mutual_information": -(total - _entropy(p, axis=2).mean(axis=0)),
        "variation_ratio": -_variation_ratio(votes),
        "variance": -p.var(axis=0).mean(axis=1),
    }


def numpy_scores(z: np.ndarray) -> dict[str, np.ndarray]:
    """Every criterion, higher = in-distribution, from logits [S, N, C, *]."""
    p = np.exp(z - logsumexp(z, axis=2, keepdims=True))
    return {
        "logit": z.mean(axis=0).max(axis=1),
        "energy": logsumexp(z.mean(axis=0), axis=1),
        "ensemble_energy": logsumexp(z, axis=2).mean(axis=0),
        **numpy_prob_scores(p, z.argmax(axis=2)),
    }


@pytest.mark.parametrize("shape", [(5, 40, 6), (4, 2, 3, 5, 6)], ids=["classes", "pixels"])
def test_every_score_matches_numpy(shape: tuple[int, ...]) -> None:
    z = _logits(shape, seed=0)
    expected = numpy_scores(z.numpy())
    from_logits = ood_scores(sample_logits=z)
    assert list(from_logits) == list(OOD_SCORES)  # logits allow every criterion, in order
    for name, value in from_logits.items():
        assert value.shape == (shape[1], *shape[3:]), name
        assert value.dtype == torch.float64, name
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-12, atol=1e-12)
        single = ood_score(name, sample_logits=z)
        np.testing.assert_allclose(single.numpy(), expected[name], rtol=1e-12, atol=1e-12)


def test_probabilities_alone_give_the_same_probability_scores() -> None:
    z = _logits((6, 30, 5), seed=1)
    from_logits = ood_scores(sample_logits=z)
    from_probs = ood_scores(sample_probs=z.softmax(dim=2))
    assert set(from_probs) == set(available_scores(False)) == set(OOD_SCORES) - LOGIT_SCORES
    for name, value in from_probs.items():
        torch.testing.assert_close(value, from_logits[name], rtol=1e-12, atol=1e-12)


def test_the_specs_say_what_each_score_needs() -> None:
    assert {n for n, s in OOD_SCORES.items() if s.needs == "logits"} == LOGIT_SCORES
    assert {n for n, s in OOD_SCORES.items() if s.ensemble_only} == ENSEMBLE_ONLY
    negated = {"entropy", "mutual_information", "variation_ratio", "variance"}
    assert {n for n, s in OOD_SCORES.items() if s.negated} == negated
    assert all(spec.name == name and spec.source for name, spec in OOD_SCORES.items())


def test_a_single_sample_has_no_disagreement() -> None:
    z = _logits((1, 50, 4), seed=2)
    scores = ood_scores(sample_logits=z)
    for name in ENSEMBLE_ONLY:  # exactly the ensemble-only criteria are constant 0
        assert torch.equal(scores[name], torch.zeros(50, dtype=torch.float64)), name
    for name in set(scores) - ENSEMBLE_ONLY:
        assert scores[name].unique().numel() == 50, name
    # logsumexp of the only member's logits either way
    torch.testing.assert_close(scores["ensemble_energy"], scores["energy"], rtol=1e-12, atol=0)


def test_higher_means_more_in_distribution_for_every_score() -> None:
    # three samples sure of class 0 against three that each vote for a different class
    confident = torch.tensor([[5.0, 0.0, 0.0]] * 3, dtype=torch.float64).unsqueeze(1)
    split = torch.eye(3, dtype=torch.float64).unsqueeze(1)  # [S=3, N=1, C=3]
    sure, unsure = ood_scores(sample_logits=confident), ood_scores(sample_logits=split)
    for name in OOD_SCORES:
        assert sure[name].item() > unsure[name].item(), name
    assert unsure["variation_ratio"].item() == pytest.approx(-(1 - 1 / 3), abs=1e-15)


def test_ensemble_energy_is_at_least_the_energy_of_the_mean_logits() -> None:
    scores = ood_scores(["energy", "ensemble_energy"], sample_logits=_logits((8, 200, 7), 3))
    # Jensen: logsumexp is convex, so the mean of logsumexps >= logsumexp of the mean
    assert bool((scores["ensemble_energy"] >= scores["energy"] - 1e-12).all())
    assert bool((scores["ensemble_energy"] > scores["energy"]).any())


def test_variation_ratio_closed_forms() -> None:
    # votes per input: (0,0,0,0) -> 0; (0,0,1,2) -> 1 - 2/4; (0,1,2,3) -> 1 - 1/4; a tie
    # between two modes (0,0,1,1) -> 1 - 2/4 whichever mode is taken
    votes = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 2], [0, 1, 2, 3], [0, 0, 1, 1]]).T
    probs = torch.nn.functional.one_hot(votes, 4).double()  # [S=4, N=4, C=4]
    assert variation_ratio(probs).tolist() == [0.0, 0.5, 0.75, 0.5]
    assert (-ood_score("variation_ratio", sample_probs=probs)).tolist() == [0.0, 0.5, 0.75, 0.5]


def test_saturated_inputs_stay_finite() -> None:
    # one-hot probabilities: 0 log 0 = 0, no NaN; two certain samples that disagree: MI = log 2
    one_hot = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    scores = ood_scores(sample_probs=one_hot)
    assert scores["entropy"].item() == pytest.approx(-math.log(2))
    assert scores["mutual_information"].item() == pytest.approx(-math.log(2))
    assert scores["msp"].item() == 0.5
    # logits far past float32's softmax range: probabilities exactly 0/1, logsumexp still exact
    huge = torch.tensor([[[1e4, 0.0, -1e4]], [[1e4, 0.0, -1e4]]], dtype=torch.float32)
    scores = ood_scores(sample_logits=huge)
    assert all(bool(torch.isfinite(v).all()) for v in scores.values())
    assert scores["energy"].item() == scores["ensemble_energy"].item() == 1e4
    assert scores["msp"].item() == 1.0 and scores["entropy"].item() == 0.0


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_float16_inputs_are_scored_in_float32(kind: str) -> None:
    z = _logits((5, 64, 10), seed=4, dtype=torch.float16)
    if kind == "logits":
        scores, expected = ood_scores(sample_logits=z), numpy_scores(z.double().numpy())
    else:
        p16 = z.float().softmax(dim=2).half()  # rows sum to 1 within float16's rounding
        p = p16.double().numpy()
        scores, expected = ood_scores(sample_probs=p16), numpy_prob_scores(p, p.argmax(axis=2))
    for name, value in scores.items():
        assert value.dtype == torch.float32, name
        np.testing.assert_allclose(value.double().numpy(), expected[name], rtol=1e-5, atol=1e-5)


def test_float16_probabilities_match_their_float32_copy() -> None:
    p16 = _logits((5, 64, 10), seed=5).softmax(dim=2).half()
    half, single = ood_scores(sample_probs=p16), ood_scores(sample_probs=p16.float())
    for name, value in half.items():  # widened once, then the same float32 computation
        assert torch.equal(value, single[name]), name


def test_bad_input_names_the_problem() -> None:
    probs = _logits((3, 4, 5), seed=6).softmax(dim=2)
    with pytest.raises(ValueError, match="'energy' needs logits"):
        ood_score("energy", sample_probs=probs)
    with pytest.raises(ValueError, match="unknown OOD score 'maxlogit': choose among msp"):
        ood_score("maxlogit", sample_probs=probs)
    with pytest.raises(ValueError, match="pass sample_logits or sample_probs"):
        ood_score("msp")
    with pytest.raises(ValueError, match="must have the same shape"):
        ood_scores(sample_logits=torch.zeros(3, 4, 6), sample_probs=probs)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ood_score("energy", sample_logits=torch.full((2, 3, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\[S, N, C\]"):
        ood_score("logit", sample_logits=torch.zeros(4, 5))
    with pytest.raises(ValueError, match="not logits"):
        ood_score("msp", sample_probs=torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        ood_score("logit", sample_logits=torch.zeros(2, 3, 4, dtype=torch.long))


def test_old_names_still_read() -> None:
    probs = _logits((4, 10, 3), seed=7).softmax(dim=2)
    scores = uncertainty_scores(probs)
    assert list(scores) == list(available_scores(False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mcp is the paper's name: no warning
        assert torch.equal(scores["mcp"], scores["msp"])
        assert "mcp" in scores and scores.get("mcp") is scores["msp"] and "mcp" not in list(scores)
    for old, new in SCORE_ALIASES.items():
        if old.startswith("neg_"):
            with pytest.warns(DeprecationWarning, match=f"use '{new}'"):
                assert torch.equal(scores[old], scores[new])
            with pytest.warns(DeprecationWarning):
                assert torch.equal(ood_score(old, sample_probs=probs), scores[new])
    with pytest.raises(KeyError):
        scores["energy"]  # not computed from probabilities, and no alias
