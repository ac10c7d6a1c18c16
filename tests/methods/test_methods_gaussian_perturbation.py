"""Gaussian perturbation: the noise has the chosen standard deviation, sigma = 0 is the trained
network, and sigma is chosen on validation data only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradi.ensemble import SampledEnsemble
from tradi.methods import build_method
from tradi.methods.gaussian_perturbation import perturbed_weights
from tradi.posterior.isotropic import IsotropicGaussian

TRAIN = {"epochs": 3, "optimizer": "adam", "lr": 1e-2, "progress": False}


def test_samples_have_the_chosen_standard_deviation() -> None:
    g = torch.Generator().manual_seed(0)
    weights = {"w": torch.randn(100, 50, generator=g), "b": torch.randn(50, generator=g)}
    posterior = IsotropicGaussian(weights, sigma=0.3)
    noise = torch.cat(
        [
            torch.cat([(s[n] - weights[n]).flatten() for n in weights])
            for s in (posterior.sample(g) for _ in range(4))
        ]
    ).numpy()
    # 20,200 standard normal draws times 0.3: the sample std is within 2% (about 7 std errors)
    assert noise.std() == pytest.approx(0.3, rel=0.02)
    assert abs(noise.mean()) < 5 * 0.3 / np.sqrt(noise.size)
    weights["w"].zero_()  # the posterior copied the weights
    assert not torch.equal(posterior.weights["w"], weights["w"])
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        IsotropicGaussian(weights, sigma=-1.0)


def test_normalisation_parameters_are_not_perturbed(model_factory) -> None:
    assert sorted(perturbed_weights(model_factory())) == [
        "0.bias",
        "0.weight",
        "4.bias",
        "4.weight",
    ]


def test_zero_sigma_reproduces_the_trained_network(model_factory, train_loader, val_loader) -> None:
    method = build_method(
        "gaussian_perturbation", model_factory, train=TRAIN, sigma=0.0, n_samples=3
    )
    method.fit(train_loader)
    assert method.model is not None
    x = next(iter(val_loader))[0]
    with torch.no_grad():
        expected = method.model.eval()(x).softmax(-1)
    for sample in method.sample_probs(x):
        torch.testing.assert_close(sample, expected)


def _nll(ensemble: SampledEnsemble, loader) -> float:
    probs = torch.cat([ensemble(x) for x, _ in loader]).double().numpy()
    targets = torch.cat([y for _, y in loader]).numpy()
    return float(-np.log(probs[np.arange(len(targets)), targets]).mean())


def test_sigma_is_chosen_on_validation_data_only(model_factory, make_loader) -> None:
    """The chosen sigma minimises the validation NLL (recomputed here with NumPy); on a test
    split with the true labels another sigma would win, so peeking at test would fail this."""
    train = make_loader(192, seed=1, shuffle=True)
    val = make_loader(96, seed=2, label_shift=1)  # wrong labels: the noisiest ensemble wins
    test = make_loader(96, seed=3)
    grid = (1e-3, 0.3, 3.0)
    method = build_method(
        "gaussian_perturbation", model_factory, train=TRAIN, sigma_grid=grid, n_samples=4
    )
    info = method.fit(train, val)
    assert method.model is not None and info.scale_search is not None
    val_nll, test_nll = {}, {}
    for sigma in grid:
        ensemble = SampledEnsemble(
            method.model, IsotropicGaussian(perturbed_weights(method.model), sigma), 4, seed=0
        )
        val_nll[sigma], test_nll[sigma] = _nll(ensemble, val), _nll(ensemble, test)
    assert min(val_nll, key=val_nll.get) != min(test_nll, key=test_nll.get)
    assert method.noise_scale == info.scale_search.scale == min(val_nll, key=val_nll.get)
    for sigma in grid:
        assert info.scale_search.scores[sigma] == pytest.approx(val_nll[sigma], rel=1e-5)
    assert info.selection_seconds > 0


def test_brier_criterion_matches_numpy(model_factory, train_loader, val_loader) -> None:
    method = build_method("gaussian_perturbation", model_factory, train=TRAIN, sigma=0.1)
    method.fit(train_loader)
    search = method.select_scale(val_loader, [0.0, 0.5], criterion="brier")
    assert method.model is not None
    for sigma in (0.0, 0.5):
        ensemble = method.ensemble(sigma)
        probs = torch.cat([ensemble(x) for x, _ in val_loader]).double().numpy()
        one_hot = np.eye(3)[torch.cat([y for _, y in val_loader]).numpy()]
        expected = ((probs - one_hot) ** 2).sum(1).mean()
        assert search.scores[sigma] == pytest.approx(expected, rel=1e-5)
