"""A last layer followed by a spatial resize (a segmentation classifier, then upsampling): the
resize detected, the mean the network's own output, the closed-form variance the classifier's
variance resized (a NumPy bilinear matrix), an upper bound of the exact and Monte-Carlo
variances of the resized logits, and PSPNet through `explore` end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tradi.inference.last_layer import find_last_layer, logits_resize, resize
from tradi.inference.linearized import LinearizedEnsemble
from tradi.models import PSPNet
from tradi.plumbing.adapters import DEFAULT_IO
from tradi.posterior import DiagonalGaussian
from tradi.training.exploration import explore

SIZE, FACTOR = (5, 6), 4


class UpNet(nn.Module):
    """Two 3x3 convs (the first with as many channels as classes), a 1x1 classifier, then the
    logits upsampled x4 by ``mode``."""

    def __init__(self, mode: str = "bilinear") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 5, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Conv2d(5, 3, 1)
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        logits = self.classifier(self.features(x))
        corners = False if self.mode in ("bilinear", "bicubic") else None
        return F.interpolate(logits, scale_factor=FACTOR, mode=self.mode, align_corners=corners)


def _net(mode: str = "bilinear") -> UpNet:
    torch.manual_seed(0)
    return UpNet(mode).double()


def _inputs(n: int = 2) -> Tensor:
    return torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(1)).double()


def _posterior(model: nn.Module, std: float = 0.3) -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(2)
    params = dict(model.classifier.named_parameters())
    mean = {f"classifier.{n}": p.detach().clone() for n, p in params.items()}
    variance = {
        f"classifier.{n}": (std * torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.05) ** 2
        for n, p in params.items()
    }
    return DiagonalGaussian(mean, variance)


def _bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[out, in] weights of 1-D linear interpolation, align_corners=False (PyTorch's: source
    coordinate (o + 0.5) in/out - 0.5, clamped at 0; the upper neighbour clamped at in - 1)."""
    matrix = np.zeros((size_out, size_in))
    for o in range(size_out):
        source = max((o + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(math.floor(source), size_in - 1)
        high, frac = min(low + 1, size_in - 1), source - low
        matrix[o, low] += 1.0 - frac
        matrix[o, high] += frac
    return matrix


def _classifier_input(model: UpNet, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.features(x)


def _exact_variance(model: UpNet, x: Tensor, posterior: DiagonalGaussian, mode: str) -> Tensor:
    """The resized logits' exact variance for a 1x1 classifier: it commutes with the resize, so
    Var = sum_c sigma_kc^2 (resized h_c)^2 + sigma_b^2 (every cross-pixel covariance counted)."""
    h = resize(_classifier_input(model, x), [s * FACTOR for s in SIZE], mode)
    weight_var = posterior.std["classifier.weight"][:, :, 0, 0] ** 2
    return torch.einsum("kc,nchw->nkhw", weight_var, h**2) + (
        posterior.std["classifier.bias"] ** 2
    ).view(1, -1, 1, 1)


def test_auto_finds_the_classifier_before_the_upsampling() -> None:
    model, x = _net(), _inputs()
    assert find_last_layer(model, x, DEFAULT_IO) == "classifier"
    with torch.no_grad():
        low, logits = model.classifier(model.features(x)), model(x)
    assert logits_resize(low, logits) == "bilinear"
    assert logits_resize(logits, logits) == "identity"
    assert logits_resize(model.features[0](x), logits) is None  # 3 channels, not the logits


def test_mean_is_the_network_and_variance_the_classifier_variance_resized() -> None:
    model, x = _net(), _inputs()
    posterior = _posterior(model)
    mean, var = LinearizedEnsemble(
        model, posterior, link="probit", last_layer="classifier"
    ).logit_moments(x)
    with torch.no_grad():
        assert torch.equal(mean, model(x))
    h = _classifier_input(model, x).numpy()
    w_var = (posterior.std["classifier.weight"][:, :, 0, 0] ** 2).numpy()
    b_var = (posterior.std["classifier.bias"] ** 2).numpy()
    low = np.einsum("kc,nchw->nkhw", w_var, h**2) + b_var[None, :, None, None]
    rows, cols = (_bilinear_matrix(s, s * FACTOR) for s in SIZE)
    expected = np.einsum("ph,nkhw,qw->nkpq", rows, low, cols)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_the_resized_variance_bounds_the_exact_and_monte_carlo_variances() -> None:
    model, x, draws = _net(), _inputs(), 4000
    posterior = _posterior(model)
    _, bound = LinearizedEnsemble(
        model, posterior, link="probit", last_layer="classifier"
    ).logit_moments(x)
    exact = _exact_variance(model, x, posterior, "bilinear")
    assert (exact <= bound * (1 + 1e-12)).all()
    # the resized logits with the classifier's weights drawn from the posterior, by the network
    gen = torch.Generator().manual_seed(3)
    names = ("classifier.weight", "classifier.bias")
    weights = {
        n: posterior.mean[n]
        + posterior.std[n]
        * torch.randn(draws, *posterior.mean[n].shape, generator=gen, dtype=torch.float64)
        for n in names
    }
    params = dict(model.named_parameters())
    logits = torch.func.vmap(
        lambda w, b: torch.func.functional_call(
            model, {**params, "classifier.weight": w, "classifier.bias": b}, (x,)
        )
    )(*(weights[n] for n in names))
    sampled = logits.detach().var(dim=0)
    error = sampled * math.sqrt(2 / (draws - 1))  # standard error of a Gaussian's variance
    assert (sampled <= bound + 5 * error).all()
    assert ((sampled - exact).abs() <= 5 * error).all()
    # pixels whose interpolation weight is 1 (the corners: clamped at the edge) are exact
    rows, cols = (np.isclose(_bilinear_matrix(s, s * FACTOR).max(axis=1), 1.0) for s in SIZE)
    one = torch.from_numpy(rows[:, None] & cols[None, :])
    assert one.sum() > 0
    torch.testing.assert_close(bound[..., one], exact[..., one], rtol=1e-10, atol=0)
    assert ((sampled - bound)[..., one].abs() <= 5 * error[..., one]).all()
    assert (bound[..., ~one] > exact[..., ~one] * 1.001).any()  # elsewhere a bound, not equal


def test_nearest_upsampling_is_detected_and_its_variance_exact() -> None:
    model, x = _net("nearest"), _inputs()
    posterior = _posterior(model)
    ensemble = LinearizedEnsemble(model, posterior, link="probit", last_layer="classifier")
    mean, var = ensemble.logit_moments(x)
    with torch.no_grad():
        assert torch.equal(mean, model(x))
        low = model.classifier(model.features(x))
    assert logits_resize(low, mean) == "nearest"
    torch.testing.assert_close(var, _exact_variance(model, x, posterior, "nearest"))


def test_mc_draws_are_the_network_with_the_drawn_classifier() -> None:
    model, x = _net(), _inputs()
    posterior = _posterior(model)
    ensemble = LinearizedEnsemble(model, posterior, n_samples=4, last_layer="classifier", seed=5)
    draws = ensemble.sample_logits(x)
    params = dict(model.named_parameters())
    for index in range(4):
        sample = posterior.sample(torch.Generator().manual_seed(ensemble._seeds[index]))
        with torch.no_grad():
            expected = torch.func.functional_call(model, {**params, **sample}, (x,))
        torch.testing.assert_close(draws[index], expected)  # linear in the weights: exact


def test_probit_shared_keeps_the_networks_arg_max() -> None:
    model, x = _net(), _inputs(4)
    posterior = _posterior(model, std=3.0)
    probs = LinearizedEnsemble(model, posterior, link="probit_shared", last_layer="classifier")(x)
    with torch.no_grad():
        assert torch.equal(probs.argmax(dim=1), model(x).argmax(dim=1))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones_like(probs[:, 0]))


def test_a_resize_not_recognised_is_refused_by_name() -> None:
    model, x = _net("bicubic"), _inputs()
    with pytest.raises(ValueError, match=r"found no .* resize"):
        find_last_layer(model, x, DEFAULT_IO)
    ensemble = LinearizedEnsemble(model, _posterior(model), link="probit", last_layer="classifier")
    with pytest.raises(ValueError, match=r"'classifier' must be called once .* by a resize"):
        ensemble.logit_moments(x)
    with pytest.raises(ValueError, match="resize mode must be one of"):
        resize(x, (2, 2), "area")


def _segmentation_data(n: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 24, 32, generator=gen)
    y = torch.randint(0, 3, (n, 24, 32), generator=gen)
    return [(x[i : i + 2], y[i : i + 2]) for i in range(0, n, 2)]


def test_pspnet_explores_end_to_end_with_its_classifier_found() -> None:
    torch.manual_seed(0)
    model = PSPNet(3, depth=18, width=4)
    train, val = _segmentation_data(4, 0), _segmentation_data(2, 1)
    result = explore(
        model,
        train,
        val,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
        cycles=1,
        epochs_per_cycle=1,
    )
    assert result.last_layer == "head.4" and len(result.modes) == 2
    x = val[0][0]
    probs = result.predictive(x)
    assert probs.shape == (2, 3, 24, 32) and torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 24, 32))
    for mode, tracker in zip(result.modes, result.trackers, strict=True):
        shared = LinearizedEnsemble(
            mode, tracker.posterior("diag", scale=10.0), link="probit_shared", last_layer="head.4"
        )
        mean, var = shared.logit_moments(x)
        assert var.shape == mean.shape and (var > 0).all()
        with torch.no_grad():
            assert torch.equal(shared(x).argmax(dim=1), mode(x).argmax(dim=1))
