"""Gaussian perturbation: the noise has the chosen standard deviation (scale x each tensor's RMS
weight), scale 0 is the trained network, and the scale is chosen on validation data only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradi.inference.ensemble import SampledEnsemble
from tradi.methods import ScaleSelection, build_method
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
        "gaussian_perturbation", model_factory, train=TRAIN, scale=0.0, n_samples=3
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


def test_scale_is_chosen_on_validation_data_only(model_factory, make_loader) -> None:
    """The search's validation NLLs are recomputed here with NumPy, and the lowest one is
    chosen; on a test split with the true labels another scale would win, so peeking at test
    would fail this."""
    train = make_loader(192, seed=1, shuffle=True)
    val = make_loader(96, seed=2, label_shift=1)  # wrong labels: the noisiest ensemble wins
    test = make_loader(96, seed=3)
    selection = ScaleSelection(rule="min_nll", iterations=0, low=1e-3, high=10.0)
    method = build_method(
        "gaussian_perturbation", model_factory, train=TRAIN, n_samples=4, selection=selection
    )
    info = method.fit(train, val)
    assert method.model is not None and info.scale_search is not None
    points = info.scale_search.points
    assert [p.scale for p in points] == [1e-3, 1e-2, 0.1, 1.0, 10.0]
    val_nll = {p.scale: _nll(method.ensemble(p.scale), val) for p in points}
    test_nll = {p.scale: _nll(method.ensemble(p.scale), test) for p in points}
    assert min(val_nll, key=val_nll.get) != min(test_nll, key=test_nll.get)
    assert method.noise_scale == info.scale_search.scale == min(val_nll, key=val_nll.get)
    for point in points:
        assert point.val_nll == pytest.approx(val_nll[point.scale], rel=1e-5)
    assert info.selection_seconds > 0


def test_scale_is_a_factor_of_each_tensors_rms_weight(model_factory, train_loader) -> None:
    method = build_method("gaussian_perturbation", model_factory, train=TRAIN, scale=0.5)
    method.fit(train_loader)
    assert method.model is not None
    posterior = method._posterior(0.5)
    g = torch.Generator().manual_seed(0)
    trained = perturbed_weights(method.model)
    draws = [posterior.sample(g) for _ in range(400)]
    for name, weight in trained.items():
        noise = torch.stack([d[name] - weight for d in draws]).double().numpy()
        rms = float(np.sqrt((weight.double().numpy() ** 2).mean()))
        # >= 400 x 16 normal draws: the sample std is within 5% (> 5 standard errors)
        assert noise.std() == pytest.approx(0.5 * rms, rel=0.05), name
