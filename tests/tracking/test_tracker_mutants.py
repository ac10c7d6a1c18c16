"""Tests written against the mutants that survived the first mutmut run on `tracking/updates.py`
and `tracking/start.py` (docs/testing.md): the gradient step of parameters outside the
optimizer, the public code's initial variance of 0-d and size-1 tensors, the device of every
allocated vector, zips of mismatched lengths, and the exact text of every refusal and warning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tradi import KalmanConfig, WeightTracker
from tradi.tracking.start import (
    _name_difference,
    check_options,
    check_state,
    early_posterior_message,
    initial_variance,
)
from tradi.tracking.updates import RESCALE_BELOW, gradient_steps, next_scale

META = torch.device("meta")


# --- updates.gradient_steps -------------------------------------------------------------------


def test_gradient_step_is_zero_for_a_parameter_with_a_gradient_outside_the_optimizer() -> None:
    inside = nn.Parameter(torch.zeros(2))
    outside = nn.Parameter(torch.zeros(3))
    inside.grad = torch.tensor([1.0, -2.0])
    outside.grad = torch.tensor([4.0, 5.0, 6.0])
    opt = torch.optim.SGD([{"params": [inside], "lr": 0.5}])
    steps = gradient_steps([inside, outside], [2, 3], opt)
    # d = -lr * grad for the optimizer's parameter; 0 (not -grad, not an error) for the other
    assert steps.tolist() == [-0.5, 1.0, 0.0, 0.0, 0.0]


def test_gradient_step_of_a_gradless_parameter_is_allocated_on_its_device() -> None:
    p = nn.Parameter(torch.empty(3, device=META))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert gradient_steps([p], [3], opt).device == META


def test_gradient_steps_refuse_mismatched_sizes() -> None:
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError):
        gradient_steps([p], [2, 5], opt)


# --- updates.update_delta: a step the optimizer did not take --------------------------------


def test_delta_form_with_a_stored_mean_skips_a_step_that_moved_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    tracker = WeightTracker(model, init_mean="zero")
    before = tracker.state_dict()
    assert before["mean"] is not None  # the update_delta path, not the floor's
    assert tracker.update() is False  # nothing moved since the tracker was built
    after = tracker.state_dict()
    for key in ("mean", "variance", "previous"):
        assert torch.equal(before[key], after[key])
    assert (tracker.num_updates, tracker.num_skipped) == (0, 1)


# --- start.initial_variance -------------------------------------------------------------------


def test_public_code_variance_of_scalar_and_size_one_tensors() -> None:
    # sqrt(2 / size(0)) of the whole tensor; a 0-d tensor and size(0) = 1 both give sqrt(2)
    shapes = [torch.Size([]), torch.Size([1, 4]), torch.Size([8, 2]), torch.Size([0, 3])]
    sizes = [1, 4, 16, 0]
    got = initial_variance("public_code", sizes, shapes, torch.device("cpu"))
    expected = [math.sqrt(2.0)] * 5 + [math.sqrt(2.0 / 8)] * 16
    torch.testing.assert_close(got, torch.tensor(expected))


def test_public_code_variance_through_the_tracker_for_a_scalar_parameter() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.tensor(2.0))
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            return self.gain * self.head(x)

    tracker = WeightTracker(
        Scaled(), param_filter=lambda *a: True, init_mean="zero", init_variance="public_code"
    )
    variance = tracker.variance()
    assert variance["gain"].item() == pytest.approx(math.sqrt(2.0))
    assert variance["head.weight"].tolist() == [[pytest.approx(math.sqrt(2.0))] * 3]


@pytest.mark.parametrize("init", [0.25, "public_code"])
def test_initial_variance_is_allocated_on_the_given_device(init) -> None:
    got = initial_variance(init, [6], [torch.Size([2, 3])], META)
    assert got.device == META and got.shape == (6,)


@pytest.mark.parametrize("init", [0.25, "public_code"])
def test_initial_variance_is_float32_on_cpu_with_the_number(init) -> None:
    got = initial_variance(init, [6], [torch.Size([2, 3])], torch.device("cpu"))
    assert got.dtype == torch.float32
    assert torch.all(got == torch.tensor(0.25 if init == 0.25 else 1.0))


def test_public_code_variance_refuses_mismatched_sizes_and_shapes() -> None:
    with pytest.raises(ValueError):
        initial_variance("public_code", [6, 2], [torch.Size([2, 3])], torch.device("cpu"))


# --- start.check_options: every refusal, exactly --------------------------------------------


def _refusal(**kwargs) -> str:
    options = {
        "step": "delta",
        "optimizer": None,
        "memory": None,
        "config": None,
        "init_mean": "weights",
        "init_variance": 0.0,
    }
    options.update(kwargs)
    with pytest.raises(ValueError) as caught:
        check_options(**options)
    return str(caught.value)


def test_check_options_messages() -> None:
    assert _refusal(step="grad") == "step must be 'delta' or 'gradient', got 'grad'"
    assert _refusal(step="gradient") == "step='gradient' reads the learning rate: pass optimizer="
    assert (
        _refusal(memory=10, config=KalmanConfig())
        == "pass memory= (in steps) or config= (noise constants), not both"
    )
    assert _refusal(memory=1) == (
        "memory is in optimizer steps and must be > 1 (e.g. the steps per epoch), got 1"
    )
    assert _refusal(init_mean="mean") == "init_mean must be 'weights' or 'zero', got 'mean'"
    assert _refusal(init_variance=-1) == (
        "init_variance must be a number >= 0 or 'public_code', got -1"
    )


@pytest.mark.parametrize("memory", [1.5, 2, 2.5])
def test_any_memory_above_one_step_is_accepted(memory) -> None:
    tracker = WeightTracker(nn.Linear(2, 2), memory=memory)
    gain = tracker.config.steady_state_gains[1]
    assert 1.0 / gain == pytest.approx(memory, rel=1e-6)


# --- start.check_state and _name_difference ---------------------------------------------------


def _state(step_form="delta", names=("a", "b"), numel=5) -> dict:
    return {"step_form": step_form, "names": list(names), "variance": torch.zeros(numel)}


def _state_refusal(state, names=("a", "b"), step_form="delta", num_weights=5) -> str:
    with pytest.raises(ValueError) as caught:
        check_state(state, list(names), step_form, num_weights)
    return str(caught.value)


def test_check_state_messages() -> None:
    check_state(_state(), ["a", "b"], "delta", 5)  # the same model and form: accepted
    assert _state_refusal(_state(step_form="gradient")) == (
        "tracker state was saved with step='gradient', this tracker uses step='delta': "
        "build it with the same step form"
    )
    assert _state_refusal(_state(numel=7)) == "tracker state holds 7 weights, this model 5"
    assert _state_refusal(_state(names=("b", "a"))) == (
        "tracker state does not match this model: the same parameters in another order"
    )


def test_check_state_through_the_tracker() -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = WeightTracker(model, step="gradient", optimizer=opt).state_dict()
    with pytest.raises(ValueError) as caught:
        WeightTracker(model, init_mean="zero").load_state_dict(saved)
    assert str(caught.value) == (
        "tracker state was saved with step='gradient', this tracker uses step='delta': "
        "build it with the same step form"
    )


def test_name_difference_lists_what_is_missing_and_extra() -> None:
    assert _name_difference(["a", "b"], ["b", "a"]) == "the same parameters in another order"
    assert _name_difference(["a", "b"], ["a"]) == (
        "saved parameters absent here ['b'], parameters here absent from the state [] "
        "(1 and 0 in all)"
    )
    assert _name_difference(["a"], ["a", "c"]) == (
        "saved parameters absent here [], parameters here absent from the state ['c'] "
        "(0 and 1 in all)"
    )
    saved = [f"s{i}" for i in range(7)] + ["common"]
    here = ["common"] + [f"h{i}" for i in range(6)]
    assert _name_difference(saved, here) == (
        "saved parameters absent here ['s0', 's1', 's2', 's3', 's4'], parameters here absent "
        "from the state ['h0', 'h1', 'h2', 'h3', 'h4'] (7 and 6 in all)"
    )


# --- start.early_posterior_message ------------------------------------------------------------


def test_early_posterior_messages_exactly() -> None:
    config = WeightTracker(nn.Linear(2, 2), memory=10).config
    assert round(1.0 / config.steady_state_gains[1]) == 10
    assert early_posterior_message(0, config) == (
        "WeightTracker.posterior(): no update yet, so the variance is the initial one "
        "(0 by default: every sample is the network itself); call tracker.update() after "
        "every optimizer.step() before drawing"
    )
    assert early_posterior_message(3, config) == (
        "WeightTracker.posterior(): 3 updates, fewer than the filters' memory (~10 steps), so "
        "the variance sums fewer squared steps than it will later; pass memory=<steps per "
        "epoch> (or fewer) to WeightTracker, or choose the sampling scale on validation data"
    )
    assert early_posterior_message(9, config) is not None
    assert early_posterior_message(10, config) is None  # the memory is full: no warning
    assert early_posterior_message(11, config) is None


# --- the 2026-11-30 run's survivors: the default filter and the floor's scale threshold ---------


def test_the_default_filter_tracks_only_trainable_weights_outside_norm_layers() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2), nn.LayerNorm(2))
    model[2].weight.requires_grad_(False)
    assert WeightTracker(model).names == ["0.weight", "0.bias", "2.bias"]


def test_a_scale_falling_exactly_to_the_threshold_is_kept_unfolded() -> None:
    var = torch.full((3,), 2.0)
    assert next_scale(var, 2 * RESCALE_BELOW, 0.5) == RESCALE_BELOW  # exact: a power of 2
    assert var.tolist() == [2.0, 2.0, 2.0]
    assert next_scale(var, 2 * RESCALE_BELOW, 0.75) == 1.0  # below it: folded into var
    assert var.tolist() == [pytest.approx(2.0 * 2 * RESCALE_BELOW * 0.25, rel=1e-6)] * 3
