"""IVON through the shared loop: the very training of the authors' README loop, the posterior
N(m, 1 / (ess (h + delta))) it implies, and predictions that average the softmax over weights
drawn from it. Skipped when the optional ivon-opt package is absent."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader

from tradi.methods import IVON, build_method
from tradi.training import Callback

ivon = pytest.importorskip("ivon")

TRAIN = {"epochs": 3, "progress": False}


def _fit(factory: Callable[[], nn.Module], loader: DataLoader, **options: float) -> IVON:
    method = build_method("ivon", factory, train=TRAIN, **options)
    method.fit(loader)
    assert isinstance(method, IVON)
    return method


def test_training_is_the_readme_loop_exactly(
    model_factory: Callable[[], nn.Module], train_loader: DataLoader
) -> None:
    method = _fit(model_factory, train_loader, lr=0.05, hess_init=0.5)

    # the README's loop, by hand, from the same seed and batches
    torch.manual_seed(0)
    assert train_loader.generator is not None
    train_loader.generator.manual_seed(0)
    model = model_factory()
    optimizer = ivon.IVON(model.parameters(), lr=0.05, ess=192, hess_init=0.5)
    for _ in range(3):
        model.train()
        for x, y in train_loader:
            with optimizer.sampled_params(train=True):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
            optimizer.step()

    trained = method._require_model().state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=0)
    assert method.variance is not None
    variance = torch.cat([method.variance[n].flatten() for n, _ in model.named_parameters()])
    expected = 1.0 / (192 * (optimizer.param_groups[0]["hess"] + 1e-4))
    torch.testing.assert_close(variance, expected)


def test_posterior_samples_have_ivon_mean_and_variance(
    model_factory: Callable[[], nn.Module], train_loader: DataLoader
) -> None:
    method = _fit(model_factory, train_loader)
    assert method.variance is not None
    params = dict(method._require_model().named_parameters())
    assert method.variance.keys() == params.keys()  # BatchNorm affine too, as IVON samples them
    posterior = method._posterior(1.0)
    g = torch.Generator().manual_seed(0)
    draws = [posterior.sample(g) for _ in range(4000)]
    for name, param in params.items():
        stack = torch.stack([d[name] for d in draws])
        std = method.variance[name].sqrt()
        # 4000 draws: the relative error of an empirical std is ~1.1%; of the mean, ~1.6% of std
        torch.testing.assert_close(stack.std(0) / std, torch.ones_like(std), rtol=0, atol=0.08)
        torch.testing.assert_close(
            (stack.mean(0) - param.detach()) / std, 0 * std, atol=0.1, rtol=0
        )


def test_prediction_averages_softmax_over_sampled_weights(
    model_factory: Callable[[], nn.Module], train_loader: DataLoader, val_loader: DataLoader
) -> None:
    # a small effective sample size makes the posterior wide, so sampling visibly matters
    method = _fit(model_factory, train_loader, ess=20.0, n_samples=500)
    x = next(iter(val_loader))[0]
    per_sample = method.sample_probs(x)
    assert per_sample.shape == (500, len(x), 3)
    torch.testing.assert_close(per_sample.sum(dim=2), torch.ones(500, len(x)))
    predicted = method.predict_mean(x)
    torch.testing.assert_close(predicted, per_sample.mean(dim=0))

    # independently: 500 other draws of N(m, var) through the eval-mode network
    model = method._require_model().eval()
    assert method.variance is not None
    g = torch.Generator().manual_seed(123)
    probs = []
    with torch.no_grad():
        for _ in range(500):
            weights = {
                n: p + method.variance[n].sqrt() * torch.randn(p.shape, generator=g)
                for n, p in model.named_parameters()
            }
            probs.append(functional_call(model, weights, (x,)).softmax(dim=1))
        at_mean = model(x).softmax(dim=1)
    reference = torch.stack(probs).mean(dim=0)
    # two independent 500-sample means of a probability (std <= 0.5) differ by <= 0.032 at one
    # sigma; sampling moves the prediction away from the mean weights' by far more (0.14 here)
    assert (predicted - reference).abs().max() < 0.05
    assert (predicted - at_mean).abs().max() > 0.1


def test_learns_a_tiny_problem_and_round_trips(
    model_factory: Callable[[], nn.Module], train_loader: DataLoader, val_loader: DataLoader
) -> None:
    method = build_method("ivon", model_factory, train={**TRAIN, "epochs": 15}, n_samples=16)
    method.fit(train_loader)
    x, y = (torch.cat(parts) for parts in zip(*val_loader, strict=True))
    accuracy = float((method.predict_mean(x).argmax(dim=1) == y).float().mean())
    assert accuracy > 0.8  # three blobs 2 apart with unit spread; chance is 1/3

    restored = build_method("ivon", model_factory, train=TRAIN, n_samples=16)
    restored.load_state_dict(method.state_dict())
    torch.testing.assert_close(restored.sample_probs(x), method.sample_probs(x))


def test_missing_package_says_what_to_install(
    model_factory: Callable[[], nn.Module],
    train_loader: DataLoader,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ivon", None)  # makes `import ivon` fail
    with pytest.raises(ImportError, match=r"pip install ivon-opt .*pip install -e \"\.\[ivon\]\""):
        build_method("ivon", model_factory, train=TRAIN).fit(train_loader)


def test_bad_options_are_refused(model_factory: Callable[[], nn.Module]) -> None:
    for bad in ({"lr": 0.0}, {"ess": -1.0}, {"beta2": 1.5}, {"n_samples": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_method("ivon", model_factory, **bad)


class Interrupt(Callback):
    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_bit_identically(
    model_factory: Callable[[], nn.Module], make_loader: Callable[..., DataLoader], tmp_path: Path
) -> None:
    """IVON's Hessian, momentum and step count (which debiases the momentum) survive a resume."""

    def run(directory: Path, interrupt_at: int | None) -> IVON:
        method = build_method("ivon", model_factory, train=TRAIN, n_samples=2)
        assert isinstance(method, IVON)
        own = method._callbacks
        method._callbacks = lambda: (*own(), Interrupt(interrupt_at))  # type: ignore[method-assign]
        method.fit(make_loader(192, seed=1, shuffle=True), checkpoint_dir=directory)
        return method

    reference = run(tmp_path / "a", None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", None)
    assert reference.variance is not None and resumed.variance is not None
    for name, value in reference._require_model().state_dict().items():
        assert torch.equal(resumed._require_model().state_dict()[name], value), name
    for name, value in reference.variance.items():
        assert torch.equal(resumed.variance[name], value), name
