"""Tests written against the mutants that survived mutmut on `tracking/tracker.py`
(docs/testing.md): the parameter filter's arguments, the state's device, the posterior's
defaults and options as passed on, where warnings point, and checkpoint refusals and counts."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from torch import nn

from tradi import WeightTracker

META = torch.device("meta")

#: mutmut wraps every mutated function in a trampoline, one more frame between the caller and
#: `warnings.warn`: a warning's reported location can only be checked outside it
OUTSIDE_MUTMUT = pytest.mark.skipif(
    "MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampolines add stack frames"
)


def _trained(updates: int = 3) -> tuple[nn.Module, WeightTracker]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tracker = WeightTracker(model, memory=2)
    g = torch.Generator().manual_seed(1)
    for _ in range(updates):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        tracker.update()
    return model, tracker


def test_the_filter_reads_names_and_an_empty_selection_is_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tracker = WeightTracker(model, param_filter=lambda name, module, p: name.startswith("1."))
    assert tracker.names == ["1.weight", "1.bias"]
    with pytest.raises(ValueError) as refused:
        WeightTracker(model, param_filter=lambda name, module, p: False)
    assert str(refused.value) == "no parameter of the model is selected for tracking"


def test_the_state_lives_on_the_models_device() -> None:
    tracker = WeightTracker(nn.Linear(3, 2, device=META), init_variance=0.5)
    assert tracker.variance()["weight"].device == META
    assert tracker.mean()["weight"].device == META


def test_posterior_defaults_rank_10_scale_1_and_passes_options_on() -> None:
    _, tracker = _trained()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = tracker.posterior("kernel")
        chosen = tracker.posterior("kernel", rank=3, scale=2.0, phase="weight")
        diagonal = tracker.posterior()
    assert (kernel.rank, kernel.scale, kernel.phase) == (10, 1.0, "feature")
    assert (chosen.rank, chosen.scale, chosen.phase) == (3, 2.0, "weight")
    assert diagonal.scale == 1.0
    # the diagonal sample is w = mu + 1.0 * sigma * m, m drawn by hand from the same generator
    sample = diagonal.sample(torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    mean, variance = tracker.mean(), tracker.variance()
    for name in tracker.names:
        m = torch.randn(mean[name].shape, generator=g)
        torch.testing.assert_close(sample[name], mean[name] + variance[name].sqrt() * m)


def test_an_unknown_covariance_is_refused_with_its_text() -> None:
    _, tracker = _trained()
    with pytest.raises(ValueError) as refused:
        tracker.posterior("full")  # type: ignore[arg-type]
    assert str(refused.value) == "covariance must be 'diag' or 'kernel', got 'full'"


@OUTSIDE_MUTMUT
def test_the_early_posterior_warning_points_at_the_callers_line() -> None:
    tracker = WeightTracker(nn.Linear(2, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.posterior()
    assert len(caught) == 1
    assert caught[0].filename == __file__


@OUTSIDE_MUTMUT
def test_the_non_finite_warning_points_at_the_callers_line() -> None:
    model = nn.Linear(2, 1)
    tracker = WeightTracker(model)
    with torch.no_grad():
        model.weight.fill_(math.nan)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.update()
    assert len(caught) == 1
    assert caught[0].filename == __file__


def test_a_checkpoint_of_another_start_is_refused_with_the_whole_text() -> None:
    model, _ = _trained()
    zero_start = WeightTracker(model, init_mean="zero")
    zero_start.update()
    with pytest.raises(ValueError) as refused:
        WeightTracker(model).load_state_dict(zero_start.state_dict())
    assert str(refused.value) == (
        "this checkpoint's tracked mean is not its w(t-1): it was made with another start "
        "(tradi 0.1.0's default was the public code's); build the tracker with "
        "init_mean='zero' (and init_variance='public_code') to resume it"
    )


def test_loading_restores_the_counts() -> None:
    model, tracker = _trained(updates=3)
    with torch.no_grad():
        model[0].weight.fill_(math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not tracker.update()  # skipped: counted
    assert (tracker.num_updates, tracker.num_skipped) == (3, 1)
    loaded = WeightTracker(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), memory=2)
    loaded.load_state_dict(tracker.state_dict())
    assert (loaded.num_updates, loaded.num_skipped) == (3, 1)
    assert isinstance(loaded.num_skipped, int)
