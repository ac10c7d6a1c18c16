"""WeightTracker against an independent float64 NumPy implementation of TRADI.md section 2."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tradi import KalmanConfig, WeightTracker
from tradi.tracking.kalman import gain_step, process_noise_for_gain, steady_state_gain


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)
    )


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(n)
    ]


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    return torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-2)


# (init_mean, init_variance): the default, the floor with a non-zero sigma2(0), the public code's
STARTS = [("weights", 0.0), ("weights", 1e-3), ("zero", "public_code")]


class NumpyTradi:
    """The paper's equations written independently, in float64, one weight array at a time."""

    def __init__(
        self, weights0: dict[str, np.ndarray], cfg: KalmanConfig, start: tuple = STARTS[0]
    ) -> None:
        self.cfg = cfg
        self.p_mu = self.p_s2 = cfg.p0
        init_mean, init_var = start
        self.mu = {n: w.copy() if init_mean == "weights" else 0 * w for n, w in weights0.items()}
        self.s2 = {
            n: np.full_like(
                w, math.sqrt(2.0 / w.shape[0]) if init_var == "public_code" else init_var
            )
            for n, w in weights0.items()
        }

    def step(self, w: dict[str, np.ndarray], d: dict[str, np.ndarray]) -> None:
        c = self.cfg
        pm = self.p_mu + c.q_mean
        k_mu = pm / (pm + c.r_mean)
        self.p_mu = (1 - k_mu) * pm
        ps = self.p_s2 + c.q_var
        k_s2 = ps / (ps + c.r_var)
        self.p_s2 = (1 - k_s2) * ps
        for n in w:
            self.mu[n] = (1 - k_mu) * (self.mu[n] + d[n]) + k_mu * w[n]
            self.s2[n] = (1 - k_s2) * (self.s2[n] + d[n] ** 2) + k_s2 * (w[n] - self.mu[n]) ** 2


def snapshot(model: nn.Module, names: list[str]) -> dict[str, np.ndarray]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().double().numpy().copy() for n in names}


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("step", ["delta", "gradient"])
def test_tracker_matches_numpy_reference_step_by_step(opt_name: str, step: str, start) -> None:
    model = small_net()
    opt = make_optimizer(opt_name, model)
    # a large gain makes every term matter within a short run
    cfg = KalmanConfig(q_mean=1e-2, r_mean=1.0, q_var=5e-3, r_var=1.0)
    init_mean, init_variance = start
    tracker = WeightTracker(
        model,
        step=step,  # type: ignore[arg-type]
        optimizer=opt,
        config=cfg,
        init_mean=init_mean,
        init_variance=init_variance,
    )
    assert tracker.names == ["0.weight", "0.bias", "4.weight", "4.bias"]  # BatchNorm skipped
    ref = NumpyTradi(snapshot(model, tracker.names), cfg, start)
    previous = snapshot(model, tracker.names)
    params = dict(model.named_parameters())
    for x, y in batches(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        tracker.update()
        w = snapshot(model, tracker.names)
        if step == "delta":
            d = {n: w[n] - previous[n] for n in w}
        else:
            lr = opt.param_groups[0]["lr"]
            d = {n: -lr * params[n].grad.double().numpy() for n in w}
        ref.step(w, d)
        previous = w
        mean, var = tracker.mean(), tracker.variance()
        for n in w:
            scale = np.abs(w[n]).max()
            np.testing.assert_allclose(mean[n].numpy(), ref.mu[n], rtol=1e-5, atol=1e-6 * scale)
            np.testing.assert_allclose(var[n].numpy(), ref.s2[n], rtol=1e-5, atol=1e-9)
    assert tracker.num_updates == 40 and tracker.num_skipped == 0


def test_gains_reach_closed_form_steady_state() -> None:
    for q, r, expected in ((1e-4, 10.0, 3.16e-3), (5e-5, 10.0, 2.23e-3)):
        p, k = 0.0, 0.0
        for _ in range(20_000):
            k, p = gain_step(p, q, r)
        assert k == pytest.approx(steady_state_gain(q, r), rel=1e-9)
        assert steady_state_gain(q, r) == pytest.approx(expected, rel=2e-3)  # TRADI.md figures


def test_memory_in_steps_round_trips_to_gain() -> None:
    cfg = KalmanConfig.from_memory(mean_steps=500, var_steps=1000)
    k_mean, k_var = cfg.steady_state_gains
    assert k_mean == pytest.approx(1 / 500, rel=1e-9)
    assert k_var == pytest.approx(1 / 1000, rel=1e-9)
    assert process_noise_for_gain(steady_state_gain(1e-4, 10.0), 10.0) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="gain"):
        KalmanConfig.from_memory(mean_steps=1, var_steps=10)


def _train(model, opt, tracker, data) -> None:
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        tracker.update()


@pytest.mark.parametrize("start", STARTS)
def test_resume_from_checkpoint_is_bit_identical(start) -> None:
    init = {"init_mean": start[0], "init_variance": start[1]}
    data = batches(30)
    torch.manual_seed(123)
    model = small_net()
    opt = make_optimizer("adam", model)
    tracker = WeightTracker(model, **init)
    _train(model, opt, tracker, data)

    torch.manual_seed(123)
    model2 = small_net()
    opt2 = make_optimizer("adam", model2)
    tracker2 = WeightTracker(model2, **init)
    _train(model2, opt2, tracker2, data[:13])
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model2.state_dict(),
            "opt": opt2.state_dict(),
            "tracker": tracker2.state_dict(),
            "rng": torch.get_rng_state(),
        },
        buffer,
    )
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model3 = small_net(seed=99)  # a fresh process: different initial weights
    model3.load_state_dict(ckpt["model"])
    opt3 = make_optimizer("adam", model3)
    opt3.load_state_dict(ckpt["opt"])
    tracker3 = WeightTracker(model3, **init)
    tracker3.load_state_dict(ckpt["tracker"])
    torch.set_rng_state(ckpt["rng"])
    _train(model3, opt3, tracker3, data[13:])

    for got, want in ((tracker3.mean(), tracker.mean()), (tracker3.variance(), tracker.variance())):
        for n in want:
            assert torch.equal(got[n], want[n]), n
    assert tracker3.num_updates == tracker.num_updates == 30


def test_checkpoints_of_other_starts() -> None:
    """A floor checkpoint resumes under the stored-mean start; one whose mean is not w(t-1)
    (the public code's start, the default of tradi 0.1.0) is refused by a floor tracker."""
    data = batches(8)
    model = small_net()
    opt = make_optimizer("sgd", model)
    floor = WeightTracker(model)
    _train(model, opt, floor, data[:4])
    stored = WeightTracker(model, init_mean="zero")
    stored.load_state_dict(floor.state_dict())
    _train(model, opt, (both := _Both(floor, stored)), data[4:])
    for n, w in model.named_parameters():
        if n in floor.names:
            torch.testing.assert_close(stored.mean()[n], w.detach(), rtol=0, atol=1e-7)
            assert torch.equal(floor.mean()[n], w.detach())
            torch.testing.assert_close(stored.variance()[n], floor.variance()[n])
    assert both.calls == 4
    with pytest.raises(ValueError, match="init_mean='zero'"):
        WeightTracker(model).load_state_dict(WeightTracker(model, init_mean="zero").state_dict())


class _Both:
    """Two trackers updated together (duck-types `update` for `_train`)."""

    def __init__(self, *trackers: WeightTracker) -> None:
        self.trackers, self.calls = trackers, 0

    def update(self) -> None:
        self.calls += 1
        for tracker in self.trackers:
            tracker.update()


def test_load_state_dict_refuses_another_model() -> None:
    tracker = WeightTracker(small_net())
    other = WeightTracker(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(tracker.state_dict())


@pytest.mark.parametrize("step", ["delta", "gradient"])
def test_non_finite_step_is_skipped_and_state_unchanged(step: str) -> None:
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WeightTracker(model, step=step, optimizer=opt)  # type: ignore[arg-type]
    data = batches(6)
    _train(model, opt, tracker, data[:3])
    before = tracker.state_dict()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        with torch.no_grad():
            model[0].weight[0, 0] = float("nan")
        assert tracker.update() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning only, however many skips
        with torch.no_grad():
            model[4].bias[0] = float("inf")
        assert tracker.update() is False
    after = tracker.state_dict()
    for key in ("mean", "variance", "previous"):
        if before[key] is not None:
            assert torch.equal(before[key], after[key])
    assert (after["p_mean"], after["p_var"]) == (before["p_mean"], before["p_var"])
    assert tracker.num_skipped == 2 and tracker.num_updates == 3


def test_bf16_model_keeps_float32_state() -> None:
    model = small_net().to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = KalmanConfig(q_mean=1e-2, r_mean=1.0, q_var=5e-3, r_var=1.0)
    tracker = WeightTracker(model, config=cfg)
    ref = NumpyTradi(snapshot(model, tracker.names), cfg)
    previous = snapshot(model, tracker.names)
    for x, y in batches(10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x.bfloat16()).float(), y).backward()
        opt.step()
        tracker.update()
        w = snapshot(model, tracker.names)
        ref.step(w, {n: w[n] - previous[n] for n in w})
        previous = w
    for n, t in tracker.mean().items():
        assert t.dtype == torch.float32
        np.testing.assert_allclose(t.numpy(), ref.mu[n], rtol=1e-5, atol=1e-6)
    for n, t in tracker.variance().items():
        assert t.dtype == torch.float32
        np.testing.assert_allclose(t.numpy(), ref.s2[n], rtol=1e-5, atol=1e-9)


def test_frozen_and_gradless_parameters() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 2), "unused": nn.Linear(4, 2)})
    model["a"].weight.requires_grad_(False)
    frozen = model["a"].weight.detach().clone()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    tracker = WeightTracker(model, step="gradient", optimizer=opt)
    assert "a.weight" not in tracker.names and "unused.weight" in tracker.names
    mu0 = tracker.mean()["unused.weight"]
    for x, y in batches(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model["b"](model["a"](x[:, :4])), y % 2).backward()
        opt.step()
        assert tracker.update()
    assert torch.equal(model["a"].weight, frozen)
    # no gradient => d = 0: mu moves only toward w with gain K_mu at each of the 3 steps
    cfg, p, expected = tracker.config, 0.0, mu0.clone()
    w = model["unused"].weight.detach()
    for _ in range(3):
        k, p = gain_step(p, cfg.q_mean, cfg.r_mean)
        expected = (1 - k) * expected + k * w
    torch.testing.assert_close(tracker.mean()["unused.weight"], expected)


def test_filter_and_init_options() -> None:
    model = small_net()
    tracker = WeightTracker(model, param_filter=lambda name, module, p: True, init_variance=1e-3)
    assert "1.weight" in tracker.names  # the BatchNorm weight, now included
    for n, p in model.named_parameters():  # the default start: mu(0) = w(0)
        assert torch.equal(tracker.mean()[n], p.detach())
        assert torch.all(tracker.variance()[n] == 1e-3)
    assert torch.count_nonzero(WeightTracker(model).variance()["0.weight"]) == 0
    public = WeightTracker(model, init_mean="zero", init_variance="public_code")
    assert torch.count_nonzero(public.mean()["0.weight"]) == 0
    assert public.variance()["0.weight"][0, 0].item() == pytest.approx(math.sqrt(2 / 16))
    with pytest.raises(ValueError, match="optimizer"):
        WeightTracker(model, step="gradient")
    with pytest.raises(ValueError, match="no parameter"):
        WeightTracker(model, param_filter=lambda *a: False)
    for bad in (None, -1.0, "fan_out"):
        with pytest.raises(ValueError, match="public_code"):
            WeightTracker(model, init_variance=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        WeightTracker(model, memory=100, config=KalmanConfig())
    for steps in (0, 1):
        with pytest.raises(ValueError, match="must be > 1"):
            WeightTracker(model, memory=steps)


def test_state_bytes_per_weight() -> None:
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for kwargs, expected in (
        ({}, 8),  # the floor: sigma2 and w(t-1)
        ({"init_mean": "zero"}, 12),
        ({"step": "gradient", "optimizer": opt}, 8),  # mean and sigma2
    ):
        tracker = WeightTracker(model, **kwargs)  # type: ignore[arg-type]
        assert tracker.state_bytes == expected * tracker.num_tracked, kwargs
