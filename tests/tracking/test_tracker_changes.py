"""WeightTracker on models that change during training (issue 20, items 4, 5, 7).

References: the floor recursion of TRADI.md section 2 (mu(0) = w(0), d = w(t) - w(t-1), so
sigma2 = (1 - K_s2)(sigma2 + d^2)) written here in float64 NumPy from recorded weights, with the
scalar gains computed here from the noise constants (not through tradi's kalman module).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tradi import KalmanConfig, SampledEnsemble, WeightTracker, fit_ensemble


def gains(n: int, cfg: KalmanConfig) -> list[float]:
    """K_s2 of the first n updates, from P(0) (TRADI.md section 2)."""
    p, out = cfg.p0, []
    for _ in range(n):
        prior = p + cfg.q_var
        k = prior / (prior + cfg.r_var)
        out.append(k)
        p = (1.0 - k) * prior
    return out


def floor_reference(history: list[np.ndarray], ks: list[float]) -> np.ndarray:
    """sigma2 after len(ks) updates from weights history[0..n] (history[0]: w at the start)."""
    s2 = np.zeros_like(history[0], dtype=np.float64)
    for t, k in enumerate(ks, start=1):
        d = history[t].astype(np.float64) - history[t - 1].astype(np.float64)
        s2 = (1.0 - k) * (s2 + d * d)
    return s2


def net(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = torch.randn(16, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (16,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


# ---------------------------------------------------------------- item 4: frozen, then unfrozen
@pytest.mark.parametrize("update_after_unfreezing", [False, True])
def test_a_backbone_frozen_at_construction_is_tracked_once_trainable(
    update_after_unfreezing: bool,
) -> None:
    model = net()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = WeightTracker(model)
    assert tracker.names == ["2.weight", "2.bias"]
    frozen_steps, free_steps = 6, 10
    for t in range(frozen_steps):
        sgd_step(model, opt, t)
        assert tracker.update()
    model[0].requires_grad_(True)
    if update_after_unfreezing:  # the recipe: start tracking before the first step
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # adopting unfrozen parameters is silent
            assert not tracker.update()  # no step taken: skipped
    history = [model[0].weight.detach().numpy().copy()]
    for t in range(free_steps):
        sgd_step(model, opt, 100 + t)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tracker.update()
        history.append(model[0].weight.detach().numpy().copy())
    assert tracker.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    moved = np.abs(history[-1] - history[0]).max()
    assert moved > 1e-3  # the backbone did move
    ks = gains(frozen_steps + free_steps, KalmanConfig())
    if update_after_unfreezing:  # every free step measured
        expected = floor_reference(history, ks[frozen_steps:])
    else:  # adopted at the first free step's update: measured from the second on
        expected = floor_reference(history[1:], ks[frozen_steps + 1 :])
    got = tracker.variance()["0.weight"].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(tracker.mean()["0.weight"].numpy(), history[-1])
    # every tracked weight is sampled: the backbone varies across members
    sample = tracker.posterior("diag").sample(torch.Generator().manual_seed(0))
    assert not torch.equal(sample["0.weight"], model[0].weight.detach())


def test_an_unfrozen_tracker_checkpoint_resumes_into_a_tracker_built_frozen() -> None:
    model = net()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WeightTracker(model)
    sgd_step(model, opt, 0)
    tracker.update()
    model[0].requires_grad_(True)
    for t in range(3):
        sgd_step(model, opt, 1 + t)
        tracker.update()
    state = tracker.state_dict()
    # the script rebuilds the model frozen, as it did at the start, then resumes
    model[0].requires_grad_(False)
    resumed = WeightTracker(model)
    resumed.load_state_dict(state)
    assert resumed.names == tracker.names
    for name, value in tracker.variance().items():
        assert torch.equal(resumed.variance()[name], value)


# ---------------------------------------------------------------- item 5: replaced or added
def _trained(steps: int = 5) -> tuple[nn.Sequential, torch.optim.Optimizer, WeightTracker]:
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WeightTracker(model)
    for t in range(steps):
        sgd_step(model, opt, t)
        tracker.update()
    return model, opt, tracker


def test_a_replaced_layer_is_named_and_tracked_afresh_at_update() -> None:
    model, _, tracker = _trained()
    model[2] = nn.Linear(16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sgd_step(model, opt, 50)
    with pytest.warns(RuntimeWarning, match=r"replaced \['2\.weight', '2\.bias'\]"):
        tracker.update()
    assert tracker.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # the new layer starts afresh (variance 0, mean = its weights); the rest keeps its state
    assert torch.equal(tracker.variance()["2.weight"], torch.zeros(3, 16))
    assert torch.equal(tracker.mean()["2.weight"], model[2].weight.detach())
    assert tracker.variance()["0.weight"].abs().sum() > 0
    x = torch.randn(8, 6)
    ensemble = SampledEnsemble(model, tracker.posterior("diag", scale=0.0), n_samples=2)
    np.testing.assert_allclose(ensemble(x), model(x).softmax(1).detach(), atol=1e-6)


def test_a_layer_replaced_after_the_last_update_is_an_error_when_sampling() -> None:
    model, _, tracker = _trained()
    model[2] = nn.Linear(16, 2)  # another shape, as in the issue
    with pytest.raises(ValueError, match=r"'2\.weight'.*tracker\.update\(\)"):
        tracker.posterior("diag")
    with pytest.raises(ValueError, match=r"'2\.weight'"):
        fit_ensemble(model, tracker, scale=0.0)
    model, _, tracker = _trained()
    model[2] = nn.Linear(16, 3)  # the same shape: only the tensor objects tell
    with pytest.raises(ValueError, match=r"replaced \['2\.weight', '2\.bias'\]"):
        fit_ensemble(model, tracker, scale=0.0)


def test_an_appended_layer_is_tracked_and_a_removed_one_is_named() -> None:
    model, opt, tracker = _trained()
    model.append(nn.Linear(3, 3))
    opt.add_param_group({"params": list(model[3].parameters())})
    sgd_step(model, opt, 60)
    with pytest.warns(RuntimeWarning, match=r"new \['3\.weight', '3\.bias'\]"):
        tracker.update()
    assert tracker.names[-2:] == ["3.weight", "3.bias"]
    del model[3]
    with pytest.raises(ValueError, match=r"removed \['3\.weight', '3\.bias'\]"):
        tracker.posterior("diag")
    sgd_step(model, opt, 61)
    with pytest.warns(RuntimeWarning, match=r"removed \['3\.weight', '3\.bias'\]"):
        tracker.update()  # the error told to update: the state follows the model again
    tracker.posterior("diag")


def test_a_parameter_reshaped_in_place_is_named() -> None:
    model, _, tracker = _trained()
    with torch.no_grad():
        model[2].weight.data = torch.zeros(3, 4)  # same object, another shape
    with pytest.raises(ValueError, match=r"reshaped \['2\.weight'\] \(\(3, 16\) -> \(3, 4\)\)"):
        tracker.posterior("diag")
    model, _, tracker = _trained()
    with torch.no_grad():
        model[2].weight.data = torch.ones(3, 4)  # no posterior in between: the update sees it
    with pytest.warns(RuntimeWarning, match=r"reshaped \['2\.weight'\]"):
        assert not tracker.update()  # nothing moved: skipped, the state laid out again
    assert torch.equal(tracker.mean()["2.weight"], torch.ones(3, 4))
    assert tracker.num_tracked == 16 * 6 + 16 + 12 + 3


def test_an_unchanged_model_walks_no_structure_at_update(monkeypatch) -> None:
    model, opt, tracker = _trained(1)
    calls = []
    import tradi.tracking.layout as layout

    real = layout.select
    monkeypatch.setattr(layout, "select", lambda *a: calls.append(1) or real(*a))
    for t in range(3):
        sgd_step(model, opt, 10 + t)
        tracker.update()
    assert calls == []


# ---------------------------------------------------------------- item 7: float64, bf16, fp16
@pytest.mark.parametrize("step", ["delta", "gradient"])
def test_a_float64_model_is_tracked_in_float64(step: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(20, 3).double()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    tracker = WeightTracker(model, step=step, optimizer=opt)
    history, steps = [model.weight.detach().numpy().copy()], []
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        x = torch.randn(64, 20, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        steps.append(-1e-6 * model.weight.grad.numpy().copy())
        opt.step()
        tracker.update()
        history.append(model.weight.detach().numpy().copy())
    variance = tracker.variance()["weight"]
    assert variance.dtype == torch.float64
    assert tracker.mean()["weight"].dtype == torch.float64
    ks = gains(40, KalmanConfig())
    if step == "delta":
        expected = floor_reference(history, ks)
    else:  # mu and sigma2 from mu(0) = w(0), d = -lr grad (TRADI.md section 2)
        cfg, p_mu = KalmanConfig(), KalmanConfig().p0
        mu, expected = history[0].copy(), np.zeros_like(history[0])
        for t, (k_s2, d) in enumerate(zip(ks, steps, strict=True), start=1):
            prior = p_mu + cfg.q_mean
            k_mu = prior / (prior + cfg.r_mean)
            p_mu = (1.0 - k_mu) * prior
            mu = (1.0 - k_mu) * (mu + d) + k_mu * history[t]
            expected = (1.0 - k_s2) * (expected + d * d) + k_s2 * (history[t] - mu) ** 2
    assert np.median(np.abs(expected)) > 0
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_keep_float32_state(dtype: torch.dtype) -> None:
    model = net(dtype=dtype)
    tracker = WeightTracker(model)
    g = torch.Generator().manual_seed(3)
    history = [model[0].weight.detach().float().numpy().copy()]
    for _ in range(20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_((1e-2 * torch.randn(p.shape, generator=g)).to(dtype))
        assert tracker.update()
        history.append(model[0].weight.detach().float().numpy().copy())
    variance = tracker.variance()["0.weight"]
    assert variance.dtype == torch.float32 and tracker.mean()["0.weight"].dtype == torch.float32
    assert all(
        t.dtype == torch.float32 for t in tracker.state_dict().values() if torch.is_tensor(t)
    )
    # float32 state on weights exact in float32: float32 rounding only
    expected = floor_reference(history, gains(20, KalmanConfig()))
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-5, atol=1e-12)
