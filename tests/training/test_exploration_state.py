"""`Exploration.state_dict` / `Exploration.from_state_dict` (issue 19): a saved multi-mode
posterior read back by ``torch.load(weights_only=True)`` predicts the same probabilities bit for
bit, for both links, with or without the training's tracker; bad templates and tampered states
are refused with errors that say what differs."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
import torch
from torch import nn

import tradi
from tradi.training.exploration import Exploration, explore

RECORD = ("scale", "search", "runs", "last_layer", "link", "n_samples", "seed", "cost_epochs")


def _data(n: int = 48, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _model(seed: int = 0, hidden: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 3))


def _sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _explore(**kwargs: Any) -> Exploration:
    settings = {"optimizer": _sgd, "cycles": 1, "epochs_per_cycle": 1, "seed": 2, **kwargs}
    return explore(_model(), _data(), _data(32, 1), **settings)


def _saved_and_loaded(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.fixture(scope="module")
def probit() -> Exploration:
    return _explore()


@pytest.mark.parametrize(("link", "last_layer"), [("probit", "auto"), ("mc", "auto"), ("mc", None)])
def test_a_round_trip_through_weights_only_gives_the_same_probabilities(
    link: str, last_layer: str | None
) -> None:
    """explore without ``tracker=`` shares the first cycle's tracker with the trained mode: it
    is saved once and rebuilt on the cycle's network (the kernel posterior of ``link="mc"``
    anchors at that network's weights; the trained network's would change the draws)."""
    result = _explore(link=link, last_layer=last_layer, n_samples=3)
    template = _model(seed=7)  # another network of the architecture: its weights do not matter
    before = {k: v.clone() for k, v in template.state_dict().items()}
    state = _saved_and_loaded(result.state_dict())
    assert len(state["modes"]) == 2 and len(state["trackers"]) == 1  # the shared tracker once
    rebuilt = Exploration.from_state_dict(state, template)
    x = _data(32, 3)[0][0]
    assert torch.equal(rebuilt.predictive(x), result.predictive(x))
    assert torch.equal(rebuilt.predictive.member_probs(x), result.predictive.member_probs(x))
    for name in RECORD:
        assert getattr(rebuilt, name) == getattr(result, name), name
    assert rebuilt.seconds == result.seconds and rebuilt.search is not None
    assert rebuilt.trackers[0] is rebuilt.trackers[1]
    assert all(not mode.training for mode in rebuilt.modes)
    for key, value in template.state_dict().items():  # the template is untouched
        assert torch.equal(value, before[key]), key


def test_the_trainings_own_tracker_is_saved_too() -> None:
    """A tracker of the user's training serves the trained mode: three trackers' worth of
    state for two modes would be wrong, one would lose it; it comes back on the trained mode."""
    model, data = _model(), _data()
    tracker = tradi.WeightTracker(model, memory=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        tracker.update()
    result = explore(model, data, optimizer=_sgd, cycles=1, epochs_per_cycle=1, tracker=tracker,
        link="mc", n_samples=3, scale=2.0)  # fmt: skip
    state = _saved_and_loaded(result.state_dict())
    assert state["tracker_of_mode"] == [0, 1] and state["tracker_follows"] == [0, 1]
    rebuilt = Exploration.from_state_dict(state, _model(seed=7))
    x = _data(32, 3)[0][0]
    assert torch.equal(rebuilt.predictive(x), result.predictive(x))
    assert rebuilt.trackers[0].config == tracker.config
    torch.testing.assert_close(rebuilt.trackers[0].variance(), tracker.variance(), rtol=0, atol=0)


def test_the_repr_stays_short(probit: Exploration) -> None:
    rebuilt = Exploration.from_state_dict(_saved_and_loaded(probit.state_dict()), _model())
    text = repr(rebuilt)
    assert text == repr(probit) and len(text) < 120, text
    assert text.startswith("Exploration(cost_epochs=1, seconds=")
    for hidden in ("tensor", "Sequential", "link", "n_samples", "seed"):
        assert hidden not in text


def test_a_template_of_another_architecture_is_refused(probit: Exploration) -> None:
    state = probit.state_dict()
    with pytest.raises(
        RuntimeError, match=r"(?s)mode 0 of the saved Exploration does not fit.*size mismatch"
    ):
        Exploration.from_state_dict(state, _model(hidden=9))


def _without(state: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda s: {**s, "format": "tradi_modes"},
            r"not a saved Exploration \(format 'tradi_modes'",
        ),
        (lambda s: [s], r"not a saved Exploration \(format 'list'"),
        (lambda s: {**s, "version": 99}, "version 99; this tradi reads version 1"),
        (lambda s: _without(s, "runs"), r"lacks \['runs'\]"),
        (lambda s: {**s, "modes": s["modes"][:1]}, "1 modes, 2 tracker indices"),
        (lambda s: {**s, "tracker_of_mode": [0, 1]}, "must use each of its 1 trackers"),
        (lambda s: {**s, "tracker_follows": [5]}, "must be modes"),
        (lambda s: {**s, "link": "laplace"}, "link must be one of"),
    ],
)
def test_a_tampered_state_is_refused(probit: Exploration, tamper: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Exploration.from_state_dict(tamper(probit.state_dict()), _model())


def test_a_tracker_state_of_another_network_is_refused(probit: Exploration) -> None:
    state = probit.state_dict()
    saved = dict(state["trackers"][0])
    saved["variance"] = torch.zeros(saved["variance"].numel() + 1)
    with pytest.raises(ValueError, match="tracker 0 of the saved Exploration"):
        Exploration.from_state_dict({**state, "trackers": [saved]}, _model())


def test_an_exploration_without_a_scale_has_no_state(probit: Exploration) -> None:
    with pytest.raises(ValueError, match="has no scale"):
        dataclasses.replace(probit, scale=None).state_dict()
