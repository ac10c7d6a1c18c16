"""TRADI modes' saved state is an `Exploration`'s (`Exploration.state_dict`) beside the trained
network: it loads under ``torch.load(weights_only=True)`` and predicts bit for bit; a state of
the older layout, or one saved with other options, is refused with what to do."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from tradi.methods import build_method

TRAIN = {"epochs": 1, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 3}
OPTIONS = {"cycles": 1, "epochs_per_cycle": 1, "scale": 30.0, "link": "mc", "n_samples": 3}


@pytest.fixture
def fitted(model_factory, train_loader, val_loader) -> Any:
    method = build_method("tradi_modes", model_factory, train=TRAIN, **OPTIONS)
    method.fit(train_loader, val_loader)
    return method


def test_the_state_loads_with_weights_only_and_predicts_bit_for_bit(
    fitted, model_factory, val_loader
) -> None:
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["exploration"]["format"] == "tradi.Exploration"
    reloaded = build_method("tradi_modes", model_factory, train=TRAIN, **OPTIONS)
    reloaded.load_state_dict(state)
    assert reloaded.mixture_scale == fitted.mixture_scale == 30.0
    assert reloaded.exploration.runs == fitted.exploration.runs
    assert torch.equal(reloaded.predict(val_loader), fitted.predict(val_loader))


def test_a_state_of_the_older_layout_is_refused(fitted, model_factory) -> None:
    state = fitted.state_dict()
    older = {
        "model": state["model"],
        "cycle_models": state["exploration"]["modes"][1:],
        "trackers": state["exploration"]["trackers"],
        "scale": 30.0,
        "scale_search": None,
        "last_layer": "4",
    }
    reloaded = build_method("tradi_modes", model_factory, train=TRAIN, **OPTIONS)
    with pytest.raises(ValueError, match=r"saved by an older tradi.*fit again"):
        reloaded.load_state_dict(older)


@pytest.mark.parametrize(
    "change", [{"link": "probit"}, {"n_samples": 4}, {"cycles": 2}], ids=lambda c: next(iter(c))
)
def test_a_state_saved_with_other_options_is_refused(
    fitted, model_factory, change: dict[str, Any]
) -> None:
    other = build_method("tradi_modes", model_factory, train=TRAIN, **{**OPTIONS, **change})
    with pytest.raises(
        ValueError, match=r"saved with \(link, n_samples, cycles\) = \('mc', 3, 1\)"
    ):
        other.load_state_dict(fitted.state_dict())
