"""WeightTracker's defaults (issue 10), skipped optimizer steps (issue 11.5) and the memory."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tradi
from tradi import KalmanConfig, WeightTracker
from tradi.models import MLP
from tradi.tracking.kalman import gain_step


def _amp_run(step: str, inf_at: int, n: int = 12) -> tuple[WeightTracker, list[dict]]:
    """SGD under a CPU `torch.amp.GradScaler`; the loss at step `inf_at` is inf, so the
    scaler skips that optimizer step. Returns the tracker and its state after every step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    tracker = WeightTracker(model, step=step, optimizer=opt)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    states = []
    for i in range(n):
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) * (float("inf") if i == inf_at else 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        assert tracker.update() is (i != inf_at)
        states.append(tracker.state_dict())
    return tracker, states


@pytest.mark.parametrize("step", ["delta", "gradient"])
def test_grad_scaler_skipped_step_is_skipped_silently_in_both_forms(step: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an optimizer's skipped step is normal under AMP
        tracker, states = _amp_run(step, inf_at=5)
    assert (tracker.num_updates, tracker.num_skipped) == (11, 1)
    before, after = states[4], states[5]
    for key in ("mean", "variance", "previous", "p_mean", "p_var"):
        if isinstance(before[key], torch.Tensor):
            assert torch.equal(before[key], after[key]), key
        else:
            assert before[key] == after[key], key


def test_posterior_warns_once_before_update_and_before_the_memory_fills() -> None:
    model = nn.Linear(4, 3)
    tracker = WeightTracker(model, memory=10)
    with pytest.warns(RuntimeWarning, match="no update yet"):
        tracker.posterior()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per tracker
        tracker.posterior()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(12):
        opt.zero_grad()
        model(torch.randn(8, 4)).square().mean().backward()
        opt.step()
        tracker.update()
    late = WeightTracker(model, memory=10)
    with pytest.warns(RuntimeWarning, match="fewer than the filters' memory"):
        for _ in range(5):
            with torch.no_grad():
                model.weight.add_(0.01)
            late.update()
        late.posterior()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.posterior()  # 12 updates > memory of 10: no warning was due
        late.posterior()


def _random_walk_variance(steps: int, memory: int | None, sd: float = 1e-3) -> tuple[float, float]:
    """Mean tracked variance after `steps` i.i.d. N(0, sd^2) steps of 4,000 weights, and its
    expectation sd^2 * sum_t prod_{r >= t} (1 - K_s2(r)) (sigma2 = (1 - K)(sigma2 + d^2))."""
    torch.manual_seed(0)
    param = nn.Parameter(torch.zeros(4000))
    holder = nn.Module()
    holder.w = param
    tracker = WeightTracker(holder, memory=memory)
    for _ in range(steps):
        with torch.no_grad():
            param.add_(torch.randn(4000) * sd)
        tracker.update()
    cfg, expected = tracker.config, 0.0
    p = cfg.p0
    for _ in range(steps):
        k, p = gain_step(p, cfg.q_var, cfg.r_var)
        expected = (1 - k) * (expected + sd**2)
    return tracker.variance()["w"].mean().item(), expected


@pytest.mark.parametrize(
    ("steps", "memory", "low", "high"),
    # a short run sums all its squared steps; a long one about the last `memory` of them
    [(80, None, 75, 80), (80, 20, 15, 20), (14_000, None, 400, 450), (14_000, 1_400, 1000, 1400)],
)
def test_variance_is_a_sum_of_squared_steps_over_the_memory(
    steps: int, memory: int | None, low: float, high: float
) -> None:
    got, expected = _random_walk_variance(steps, memory)
    # 4,000 weights: the mean of a discounted chi-square sum is within ~3% of its expectation
    assert got == pytest.approx(expected, rel=0.06)
    assert low * 1e-6 <= expected <= high * 1e-6  # in units of sd^2 = 1e-6
    if memory is not None:
        assert KalmanConfig.from_memory(memory, memory).steady_state_gains[1] == pytest.approx(
            1 / memory
        )


def test_quick_start_with_bare_defaults_keeps_the_network_accuracy() -> None:
    """Issue 10's bar: README's quick start on digits, 150 AdamW steps, kernel posterior, BN
    re-estimated: the ensemble's test accuracy within 0.5 pt of the network's (seed 0)."""
    datasets = pytest.importorskip("sklearn.datasets")
    torch.manual_seed(0)
    x_all, y_all = datasets.load_digits(return_X_y=True)
    x, y = torch.tensor(x_all / 16.0, dtype=torch.float32), torch.tensor(y_all)
    perm = torch.randperm(len(x))
    x, y = x[perm], y[perm]
    loader = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 1400 - 63, 64)]
    model = MLP(in_features=64, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters())
    tracker = WeightTracker(model)
    for step in range(150):
        xb, yb = loader[step % len(loader)]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()
        tracker.update()
    with pytest.warns(RuntimeWarning, match="memory"):
        posterior = tracker.posterior("kernel", rank=10)
    assert min(v.max().item() for v in tracker.variance().values()) > 0
    ensemble = tradi.SampledEnsemble(model, posterior, n_samples=20, bn_loader=loader)
    model.eval()
    x_test, y_test = x[1400:], y[1400:]
    acc_net = (model(x_test).argmax(1) == y_test).float().mean().item()
    acc_ens = (ensemble(x_test).argmax(1) == y_test).float().mean().item()
    assert acc_net > 0.9
    assert acc_ens >= acc_net - 0.005
