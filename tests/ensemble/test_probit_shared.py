"""``link="probit_shared"``: the probit with one variance per input, the classes' mean.

Checked against a NumPy recomputation of softmax(m / sqrt(1 + pi/8 mean_c v_c)) in float64, and
for what it is for: the arg-max is the network's exactly at any scale (an MLP and a small
segmentation net), scale 0 is the network's softmax, and confidence only falls as the scale grows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import tradi
from tradi.inference.linearized import LinearizedEnsemble, probit_softmax
from tradi.posterior import DiagonalGaussian
from tradi.training.exploration import explore

SCALES = (0.0, 1.0, 1e3)


def _reference(m: np.ndarray, v: np.ndarray, class_dim: int = 1) -> np.ndarray:
    z = m / np.sqrt(1 + np.pi / 8 * v.mean(axis=class_dim, keepdims=True))
    z = z - z.max(axis=class_dim, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=class_dim, keepdims=True)


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4, 5)])
def test_the_formula_against_numpy(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    mean = 3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    var = 5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    got = probit_softmax(mean, var, shared=True)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _reference(mean.numpy(), var.numpy()), rtol=1e-6)
    # one variance per input: any split of the same class mean gives the same probabilities
    flat = var.mean(dim=1, keepdim=True).expand_as(var)
    np.testing.assert_allclose(probit_softmax(mean, flat).numpy(), got.numpy(), rtol=1e-12)


def test_the_per_class_probit_moves_the_arg_max_and_the_shared_one_does_not() -> None:
    mean = torch.tensor([[1.0, 0.9]])
    var = torch.tensor([[100.0, 0.0]])  # the leading class is the uncertain one
    assert probit_softmax(mean, var).argmax(dim=1).item() == 1
    assert probit_softmax(mean, var, shared=True).argmax(dim=1).item() == 0


def _random_posterior(model: nn.Module, scale: float) -> DiagonalGaussian:
    """Centred at the model, weight variances that differ by class (uniform over 3 decades)."""
    gen = torch.Generator().manual_seed(1)
    mean = {n: p.detach().clone() for n, p in model.named_parameters()}
    variance = {
        n: 10 ** (-3 + 3 * torch.rand(p.shape, generator=gen)) for n, p in model.named_parameters()
    }
    return DiagonalGaussian(mean, variance, scale=scale)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5))


def _segmenter() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1))


CASES = [(_mlp, "2", (64, 4)), (_segmenter, "2", (3, 2, 7, 9))]


@pytest.mark.parametrize(("make", "last", "shape"), CASES)
def test_the_arg_max_is_the_networks_at_every_scale(make, last, shape) -> None:  # type: ignore[no-untyped-def]
    model = make()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
    for scale in SCALES:
        posterior = _random_posterior(model, scale)
        ensemble = LinearizedEnsemble(model, posterior, link="probit_shared", last_layer=last)
        probs = ensemble(x)
        assert probs.shape == logits.shape
        assert torch.equal(probs.argmax(dim=1), logits.argmax(dim=1)), scale
        if scale == 0.0:
            torch.testing.assert_close(probs, logits.softmax(dim=1))


@pytest.mark.parametrize(("make", "last", "shape"), CASES)
def test_confidence_never_rises_with_the_scale(make, last, shape) -> None:  # type: ignore[no-untyped-def]
    """Max-probability per input (pixel) is non-increasing in the scale: float32, 1e-6 slack."""
    model = make()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    scales = (0.0, 0.1, 1.0, 10.0, 100.0, 1e3)
    top = torch.stack(
        [
            LinearizedEnsemble(
                model, _random_posterior(model, s), link="probit_shared", last_layer=last
            )(x).amax(dim=1)
            for s in scales
        ]
    )
    assert torch.all(top[1:] - top[:-1] <= 1e-6)
    assert torch.all(top[-1] < top[0])  # the spread does lower it, everywhere


def test_the_per_class_probit_differs_where_variances_differ() -> None:
    """The two links are different functions of the same moments (the test above is not moot)."""
    model = _mlp()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(4))
    posterior = _random_posterior(model, 10.0)
    shared = LinearizedEnsemble(model, posterior, link="probit_shared", last_layer="2")
    plain = LinearizedEnsemble(model, posterior, link="probit", last_layer="2")
    assert not torch.allclose(shared(x), plain(x), atol=1e-3)


def _data(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def test_fit_ensemble_builds_it_end_to_end(train_tracked: Callable[..., Any]) -> None:
    model, batches = _mlp(), _data(64, 5)
    tracker = train_tracked(model, batches, epochs=4)
    ensemble, search = tradi.fit_ensemble(
        model, tracker, _data(32, 6), predictive="probit_shared", sample_modules=["2"]
    )
    assert isinstance(ensemble, LinearizedEnsemble) and search is not None
    assert ensemble.link == "probit_shared"
    assert isinstance(ensemble.posterior, DiagonalGaussian)
    x = batches[0][0]
    with torch.no_grad():
        assert torch.equal(ensemble(x).argmax(dim=1), model(x).argmax(dim=1))
    with pytest.raises(ValueError, match="one last layer"):
        tradi.fit_ensemble(model, tracker, predictive="probit_shared", scale=1.0)


def test_explore_runs_with_it() -> None:
    model = _mlp()
    result = explore(
        model,
        _data(64, 7),
        _data(32, 8),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        cycles=1,
        epochs_per_cycle=1,
        link="probit_shared",
    )
    assert result.search is not None and result.last_layer == "2"
    probs = result.predictive(_data(16, 9)[0][0])
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(16))


def test_bad_links_list_every_link() -> None:
    """(The tradi_modes option's message: tests/methods/test_methods_tradi_modes.py.)"""
    model = _mlp()
    posterior = _random_posterior(model, 1.0)
    with pytest.raises(ValueError, match=r"\['mc', 'probit', 'probit_shared'\], got 'laplace'"):
        LinearizedEnsemble(model, posterior, link="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"probit_shared.*last_layer"):
        LinearizedEnsemble(model, posterior, link="probit_shared")
    with pytest.raises(ValueError, match=r"'probit', 'probit_shared'\)"):
        tradi.fit_ensemble(model, lambda s: posterior, predictive="probits", scale=1.0)  # type: ignore[arg-type]
