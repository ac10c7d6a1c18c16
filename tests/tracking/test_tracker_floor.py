"""The default ("floor") update's shortcuts (docs/tracker.md, Cost): the scaled variance and its
folding, and the sampled test that some weight moved, against closed forms and float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tradi import KalmanConfig, WeightTracker
from tradi.tracking.kalman import gain_step
from tradi.tracking.updates import RESCALE_BELOW


def test_floor_matches_float64_reference_across_scale_folds() -> None:
    """memory=3 (K_s2 -> 1/3) folds the scale into the stored vector every ~35 steps: 150 SGD
    steps cross several folds and the variance stays within float32 rounding of
    sigma2 = (1 - K)(sigma2 + d^2) in float64."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = WeightTracker(model, memory=3)
    cfg = KalmanConfig.from_memory(3, 3)
    params = dict(model.named_parameters())
    prev = {n: params[n].detach().double().numpy().copy() for n in tracker.names}
    ref = {n: np.zeros_like(w) for n, w in prev.items()}
    p_var, folds, scale = cfg.p0, 0, 1.0
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        assert tracker.update() is True
        k, p_var = gain_step(p_var, cfg.q_var, cfg.r_var)
        variance = tracker.variance()
        for n in tracker.names:
            w = params[n].detach().double().numpy()
            ref[n] = (1 - k) * (ref[n] + (w - prev[n]) ** 2)
            prev[n] = w.copy()
            np.testing.assert_allclose(variance[n].numpy(), ref[n], rtol=2e-6, atol=1e-30)
            assert torch.equal(tracker.mean()[n], params[n].detach())
        new_scale = tracker.state_dict()["variance_scale"]
        folds += new_scale > scale
        scale = new_scale
        assert RESCALE_BELOW <= scale <= 1.0
    assert folds >= 3


def test_a_step_the_probe_misses_is_found_by_the_full_check() -> None:
    """Linear(20, 10): 210 weights, the probe reads every 3rd entry of -d. A step moving only
    weight[0, 1] (flat index 1) is done, with sigma2 = (1 - K) d^2 there and 0 elsewhere; a
    step moving nothing is skipped and leaves the state exactly as it was."""
    torch.manual_seed(0)
    model = nn.Linear(20, 10)
    tracker = WeightTracker(model)
    with torch.no_grad():
        model.weight[0, 1] += 0.5
    assert tracker.update() is True
    k, _ = gain_step(tracker.config.p0, tracker.config.q_var, tracker.config.r_var)
    expected = torch.zeros(10, 20)
    expected[0, 1] = (1 - k) * 0.25
    torch.testing.assert_close(tracker.variance()["weight"], expected, rtol=1e-6, atol=0)
    assert torch.equal(tracker.variance()["bias"], torch.zeros(10))
    assert torch.equal(tracker.mean()["weight"], model.weight.detach())

    before = tracker.state_dict()
    assert tracker.update() is False
    after = tracker.state_dict()
    for key in ("variance", "previous", "variance_scale", "p_var"):
        assert before[key] is not None
        assert torch.equal(torch.as_tensor(before[key]), torch.as_tensor(after[key])), key
    assert (tracker.num_updates, tracker.num_skipped) == (1, 1)


@pytest.mark.parametrize("init_mean", ["weights", "zero"])
def test_checkpoint_without_a_scale_loads_as_scale_one(init_mean: str) -> None:
    """Checkpoints written before the scale existed hold sigma2 itself under "variance"."""
    model = nn.Linear(4, 3)
    source = WeightTracker(model)
    with torch.no_grad():
        model.weight.add_(0.1)
    source.update()
    state = source.state_dict()
    assert state["variance_scale"] != 1.0
    variance = source.variance()
    state["variance"] = torch.cat([variance["weight"].reshape(-1), variance["bias"]])
    del state["variance_scale"]
    target = WeightTracker(model, init_mean=init_mean)  # type: ignore[arg-type]
    target.load_state_dict(state)
    for n, v in target.variance().items():
        torch.testing.assert_close(v, variance[n], rtol=1e-6, atol=0)
