"""The linearized (GLM) predictive against independent references: Jacobians from
`torch.autograd.functional.jacobian` in float64, the logit covariance J Sigma J^T and the probit
formula recomputed in NumPy, and the sampled ensemble where the linearization is exact."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tradi import SampledEnsemble
from tradi.inference.linearized import LinearizedEnsemble, probit_softmax
from tradi.posterior import DiagonalGaussian, KernelGaussian


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def _posterior(model: nn.Module, shift: float = 0.05, std: float = 0.1) -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(1)
    mean = {
        n: p.detach() + shift * torch.randn(p.shape, generator=gen)
        for n, p in model.named_parameters()
    }
    variance = {
        n: (std * torch.rand(p.shape, generator=gen) + 0.01) ** 2
        for n, p in model.named_parameters()
    }
    return DiagonalGaussian(mean, variance)


def _jacobian(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """d logits / d (all parameters, flattened in named_parameters order), [N*C, P], float64."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().double().reshape(-1) for _, p in model.named_parameters()])
    model64 = _mlp().double()

    def logits(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = math.prod(shape)
            params[name] = theta[start : start + size].reshape(shape)
            start += size
        return torch.func.functional_call(model64, params, (x.double(),)).reshape(-1)

    return torch.autograd.functional.jacobian(logits, flat).numpy()


def test_probit_softmax_is_the_formula_and_zero_variance_is_softmax() -> None:
    gen = torch.Generator().manual_seed(0)
    mean, var = torch.randn(5, 4, generator=gen), torch.rand(5, 4, generator=gen) * 3
    m, v = mean.numpy().astype(np.float64), var.numpy().astype(np.float64)
    z = m / np.sqrt(1 + np.pi / 8 * v)
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probit_softmax(mean, var).numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(probit_softmax(mean, torch.zeros_like(var)), mean.softmax(dim=1))
    with pytest.raises(ValueError, match="differ"):
        probit_softmax(mean, var[:, :2])


def test_each_draw_is_the_network_plus_the_jacobian_times_the_offset() -> None:
    model, x = _mlp(), torch.randn(7, 4, generator=torch.Generator().manual_seed(2))
    posterior = _posterior(model)
    ens = LinearizedEnsemble(model, posterior, n_samples=5, seed=3)
    draws = ens.sample_logits(x).double().numpy()  # [S, N, C]
    jac = _jacobian(model, x)
    base = model(x).detach().double().numpy()
    for index in range(5):
        gen = torch.Generator().manual_seed(ens._seeds[index])
        sample = posterior.sample(gen)
        delta = torch.cat(
            [
                (sample[n] - posterior.mean[n]).double().reshape(-1)
                for n, _ in model.named_parameters()
            ]
        ).numpy()
        expected = base + (jac @ delta).reshape(base.shape)
        np.testing.assert_allclose(draws[index], expected, rtol=1e-4, atol=1e-5)


def test_draws_have_mean_f_and_covariance_j_sigma_jt() -> None:
    """Statistics over 4,000 draws: mean within 5 standard errors, covariance within 10%."""
    model, x = _mlp(), torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    posterior = _posterior(model, std=0.3)
    draws = LinearizedEnsemble(model, posterior, n_samples=4000).sample_logits(x)
    draws = draws.double().reshape(4000, -1).numpy()
    jac = _jacobian(model, x)
    sigma = np.concatenate(
        [posterior.std[n].double().reshape(-1).numpy() ** 2 for n, _ in model.named_parameters()]
    )
    cov = (jac * sigma) @ jac.T
    base = model(x).detach().double().reshape(-1).numpy()
    stderr = np.sqrt(np.diag(cov) / 4000)
    assert np.all(np.abs(draws.mean(axis=0) - base) < 5 * stderr)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.1, atol=0.1 * np.abs(cov).max())


def test_last_layer_variance_is_the_closed_form() -> None:
    model = _mlp()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(5))
    posterior = _posterior(model)
    mean, var = LinearizedEnsemble(model, posterior, link="probit", last_layer="2").logit_moments(x)
    h = torch.tanh(model[0](x)).detach().double().numpy()
    w_var = posterior.std["2.weight"].double().numpy() ** 2
    b_var = posterior.std["2.bias"].double().numpy() ** 2
    np.testing.assert_allclose(var.double().numpy(), h**2 @ w_var.T + b_var, rtol=1e-5)
    torch.testing.assert_close(mean, model(x).detach())


def test_transposed_convolution_variance_against_its_jacobian() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(3, 4, 2, 2))
    x = torch.randn(2, 2, 5, 5)
    posterior = _posterior(model)
    _, var = LinearizedEnsemble(model, posterior, link="probit", last_layer="2").logit_moments(x)
    layer, h = model[2], model[1](model[0](x)).detach()
    for name in ("weight", "bias"):
        jac = torch.autograd.functional.jacobian(
            lambda w, name=name: torch.func.functional_call(layer, {name: w}, (h,)),
            getattr(layer, name).detach(),
        )  # [N, C, H, W, *param shape]
        jac = jac.reshape(*var.shape, -1).double().numpy()
        sigma = posterior.std[f"2.{name}"].double().reshape(-1).numpy() ** 2
        if name == "weight":
            total = (jac**2 * sigma).sum(-1)
        else:
            total = total + (jac**2 * sigma).sum(-1)
    np.testing.assert_allclose(var.double().numpy(), total, rtol=1e-4, atol=1e-7)


def test_last_layer_draws_are_the_sampled_ensemble_when_centred_at_the_network() -> None:
    """A layer is linear in its weights: linearized and sampled predictions coincide exactly."""
    model = _mlp()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(7))
    mean = {n: p.detach().clone() for n, p in model.named_parameters()}
    variance = {n: torch.full_like(p, 0.04) for n, p in model.named_parameters()}
    for posterior in (
        DiagonalGaussian(mean, variance),
        KernelGaussian(mean, variance, {n: m.clone() for n, m in mean.items()}, rank=4),
    ):
        linearized = LinearizedEnsemble(model, posterior, 6, last_layer="2", seed=9)
        sampled = SampledEnsemble(model, posterior, 6, sample_modules=["2"], seed=9)
        torch.testing.assert_close(linearized.sample_logits(x), sampled.sample_logits(x))


@pytest.mark.parametrize("link", ["mc", "probit"])
def test_zero_spread_is_the_network(link: str) -> None:
    model = _mlp()
    x = torch.randn(5, 4)
    posterior = DiagonalGaussian(
        {n: p.detach() + 1.0 for n, p in model.named_parameters()},
        {n: torch.zeros_like(p) for n, p in model.named_parameters()},
    )
    ens = LinearizedEnsemble(model, posterior, 3, link=link, last_layer="2")
    torch.testing.assert_close(ens(x), model(x).softmax(dim=1).detach())


def test_the_users_model_is_untouched() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ens = LinearizedEnsemble(model, _posterior(model), 4)
    x = torch.randn(8, 4)
    torch.testing.assert_close(ens(x), ens(x))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_arguments_are_refused() -> None:
    model = _mlp()
    posterior = _posterior(model)
    with pytest.raises(ValueError, match="n_samples"):
        LinearizedEnsemble(model, posterior, 0)
    with pytest.raises(ValueError, match="link"):
        LinearizedEnsemble(model, posterior, link="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probit"):
        LinearizedEnsemble(model, posterior, link="probit")
    with pytest.raises(ValueError, match="Tanh"):
        LinearizedEnsemble(model, posterior, last_layer="1")
    with pytest.raises(ValueError, match="not a module"):
        LinearizedEnsemble(model, posterior, last_layer="head")
    with pytest.raises(ValueError, match="logits"):
        LinearizedEnsemble(model, posterior, last_layer="0").sample_logits(torch.randn(2, 4))

    class NoMean:
        def sample(self, generator=None):
            return {}

    with pytest.raises(ValueError, match="mean"):
        LinearizedEnsemble(model, NoMean())  # type: ignore[arg-type]


class _Upsampler(nn.Module):
    """A last layer called with an extra argument, as ENet calls its transposed convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.body(x)), output_size=x.shape[-2:])


def test_the_last_layers_own_call_arguments_are_kept() -> None:
    torch.manual_seed(8)
    model, x = _Upsampler(), torch.randn(2, 2, 6, 8)
    posterior = _posterior(model)
    ensemble = LinearizedEnsemble(model, posterior, 3, link="probit", last_layer="up")
    mean, var = ensemble.logit_moments(x)
    assert var.shape == mean.shape == (2, 4, 6, 8)
    h = torch.relu(model.body(x)).detach()
    jac = torch.autograd.functional.jacobian(
        lambda w: torch.func.functional_call(
            model.up, {"weight": w}, (h,), {"output_size": (6, 8)}
        ),
        model.up.weight.detach(),
    ).reshape(*var.shape, -1)
    sigma = posterior.std["up.weight"].reshape(-1) ** 2
    expected = (jac**2 * sigma).sum(-1) + (posterior.std["up.bias"] ** 2).reshape(1, 4, 1, 1)
    torch.testing.assert_close(var, expected, rtol=1e-4, atol=1e-7)
    assert LinearizedEnsemble(model, posterior, 3, last_layer="up").sample_logits(x).shape == (
        3, 2, 4, 6, 8,
    )  # fmt: skip


def _trained_tracker(
    train_tracked: Callable[..., Any],
) -> tuple[nn.Module, object, list[tuple[torch.Tensor, torch.Tensor]]]:
    model = _mlp()
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(64, 4, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    return model, train_tracked(model, batches, epochs=5), batches


@pytest.mark.parametrize(
    ("predictive", "modules"), [("linearized", None), ("linearized", ["2"]), ("probit", ["2"])]
)
def test_fit_ensemble_builds_the_linearized_predictive(
    predictive: str, modules: object, train_tracked: Callable[..., Any]
) -> None:
    from tradi import fit_ensemble

    model, tracker, batches = _trained_tracker(train_tracked)
    ensemble, search = fit_ensemble(
        model, tracker, batches, predictive=predictive, sample_modules=modules, n_samples=4
    )
    assert isinstance(ensemble, LinearizedEnsemble) and search is not None
    assert ensemble.link == ("probit" if predictive == "probit" else "mc")
    x = batches[0][0]
    still, _ = fit_ensemble(
        model, tracker, predictive=predictive, sample_modules=modules, scale=0.0, n_samples=4
    )
    torch.testing.assert_close(still(x), model(x).softmax(dim=1).detach())


def test_fit_ensemble_refuses_a_probit_without_one_layer(train_tracked: Callable[..., Any]) -> None:
    from tradi import fit_ensemble

    model, tracker, _ = _trained_tracker(train_tracked)
    with pytest.raises(ValueError, match="one last layer"):
        fit_ensemble(model, tracker, predictive="probit", scale=1.0)
    with pytest.raises(ValueError, match="predictive must be one of"):
        fit_ensemble(model, tracker, predictive="laplace", scale=1.0)  # type: ignore[arg-type]
