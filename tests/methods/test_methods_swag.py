"""SWAG: the collected moments against NumPy, the sample covariance against
diag + low-rank, and iterates collected once per epoch from the start epoch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tradi.methods import build_method
from tradi.posterior.swag import SWAGCollector, SWAGPosterior
from tradi.training import Callback

TRAIN = {"epochs": 5, "optimizer": "sgd", "lr": 0.05, "progress": False}


class RecordWeights(Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        self.states.append({n: p.detach().clone() for n, p in model.named_parameters()})


def test_collector_moments_match_numpy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    collector = SWAGCollector(model, max_rank=3)
    iterates = []
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        iterates.append(
            {n: p.detach().numpy().astype(np.float64).copy() for n, p in model.named_parameters()}
        )
        collector.collect()
    assert collector.names == ["0.weight", "0.bias", "1.weight", "1.bias"]  # BN affine too
    for name in collector.names:
        stack = np.stack([it[name] for it in iterates])
        np.testing.assert_allclose(collector.mean()[name], stack.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(collector.variance()[name], stack.var(0), rtol=1e-4, atol=1e-5)
        running_means = np.cumsum(stack, 0) / np.arange(1, 6).reshape(-1, *[1] * (stack.ndim - 1))
        np.testing.assert_allclose(
            collector.deviations()[name], (stack - running_means)[-3:], rtol=1e-4, atol=1e-5
        )


def test_sample_covariance_is_diagonal_plus_low_rank() -> None:
    g = torch.Generator().manual_seed(0)
    mean = {"a": torch.randn(3, generator=g), "b": torch.randn(2, 1, generator=g)}
    variance = {"a": torch.tensor([0.5, 1.0, 0.2]), "b": torch.tensor([[0.3], [0.8]])}
    deviations = {"a": torch.randn(4, 3, generator=g), "b": torch.randn(4, 2, 1, generator=g)}
    posterior = SWAGPosterior(mean, variance, deviations, covariance_scale=0.5)

    n = 20_000
    draws = [posterior.sample(g) for _ in range(n)]
    flat = torch.stack([torch.cat([d["a"], d["b"].flatten()]) for d in draws]).double().numpy()
    d_matrix = np.concatenate([deviations["a"].numpy(), deviations["b"].reshape(4, 2).numpy()], 1)
    diag = np.concatenate([variance["a"].numpy(), variance["b"].flatten().numpy()])
    expected = 0.5 * (np.diag(diag) + d_matrix.T @ d_matrix / (4 - 1))
    mu = np.concatenate([mean["a"].numpy(), mean["b"].flatten().numpy()])

    empirical = np.cov(flat, rowvar=False)
    # standard error of a covariance estimate: sqrt((S_ii S_jj + S_ij^2) / n); allow 5 of them
    standard_error = np.sqrt((np.outer(np.diag(expected), np.diag(expected)) + expected**2) / n)
    assert np.all(np.abs(empirical - expected) < 5 * standard_error)
    assert np.all(np.abs(flat.mean(0) - mu) < 5 * np.sqrt(np.diag(expected) / n))
    # the low-rank part is what couples "a" with "b": those covariances are far from zero
    assert np.abs(expected[:3, 3:]).max() > 20 * standard_error[:3, 3:].max()


def test_swag_collects_once_per_epoch_from_the_start_epoch(
    model_factory, train_loader, val_loader
) -> None:
    method = build_method("swag", model_factory, train=TRAIN, start_epoch=2, rank=2, n_samples=4)
    recorder = RecordWeights()
    method._callbacks = _with(method._callbacks, recorder)  # type: ignore[method-assign]
    method.fit(train_loader, val_loader)
    collector = method.collector
    assert collector is not None and collector.num_collected == 3  # epochs 2, 3, 4
    for name in collector.names:
        stack = torch.stack([state[name] for state in recorder.states[2:]])
        torch.testing.assert_close(collector.mean()[name], stack.mean(0))
    assert build_method("swag", model_factory, train=TRAIN).start_epoch == 2  # epochs // 2


def _with(make_callbacks, extra: Callback):
    return lambda: (*make_callbacks(), extra)


def test_zero_covariance_scale_predicts_with_the_swa_mean(
    model_factory, train_loader, val_loader
) -> None:
    method = build_method(
        "swag", model_factory, train=TRAIN, scale=0.0, bn_update=False, n_samples=3
    )
    method.fit(train_loader)
    assert method.model is not None and method.collector is not None
    swa = copy.deepcopy(method.model)
    swa.load_state_dict(method.collector.mean(), strict=False)
    x = next(iter(val_loader))[0]
    with torch.no_grad():
        expected = swa.eval()(x).softmax(-1)
    probs = method.sample_probs(x)
    for sample in probs:
        torch.testing.assert_close(sample, expected)
    assert not torch.allclose(expected, method.model.eval()(x).softmax(-1))  # SWA != last iterate


def test_swag_refuses_a_start_epoch_after_training(model_factory, train_loader) -> None:
    method = build_method("swag", model_factory, train=TRAIN, start_epoch=5)
    with pytest.raises(ValueError, match="nothing would be collected"):
        method.fit(train_loader)


class Interrupt(Callback):
    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def test_swa_learning_rate_from_the_start_epoch_and_resume(
    model_factory, make_loader, tmp_path
) -> None:
    """With swa_lr, torch's SWALR takes over at start_epoch; its state resumes bit-identically."""
    train = {**TRAIN, "lr": 0.1, "scheduler": "step", "step_size": 2}
    options = {"start_epoch": 3, "swa_lr": 0.05, "rank": 2, "n_samples": 2}

    def run(directory, interrupt_at):
        method = build_method("swag", model_factory, train=train, **options)
        method._callbacks = _with(method._callbacks, Interrupt(interrupt_at))  # type: ignore[method-assign]
        info = method.fit(make_loader(192, seed=1, shuffle=True), checkpoint_dir=directory)
        return method, info

    reference, info = run(tmp_path / "a", None)
    lrs = [h["lr"] for h in info.runs[0].history]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.05, 0.05])
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 3)
    resumed, resumed_info = run(tmp_path / "b", None)
    assert resumed_info.runs[0].history == info.runs[0].history
    assert reference.collector is not None and resumed.collector is not None
    for name, mean in reference.collector.mean().items():
        assert torch.equal(mean, resumed.collector.mean()[name])
    with pytest.raises(ValueError, match="start_epoch >= 1"):
        build_method("swag", model_factory, train=train, start_epoch=0, swa_lr=0.05).fit(
            make_loader(96, seed=1)
        )
