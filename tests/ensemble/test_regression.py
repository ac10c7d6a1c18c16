"""Regression (issue 11, item 4): predictive mean and variance over the sampled networks.

Checked against closed forms: a linear model under a diagonal Gaussian posterior has predictive
mean w.x and variance sum_i v_i x_i^2; a Gaussian head adds its own variance (law of total
variance); a one-output model is refused for classification.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tradi import DiagonalGaussian, GaussianPrediction, ModelIO, SampledEnsemble
from tradi.inference.regression import mixture_moments


class GaussianHead(nn.Module):
    """Predicts (mean, variance) per output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(3, 8)
        self.mean, self.log_var = nn.Linear(8, 2), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.body(x))
        return self.mean(h), self.log_var(h).exp()


def test_single_output_classification_is_refused() -> None:
    model = nn.Linear(3, 1)
    posterior = DiagonalGaussian({"weight": model.weight.detach()}, {"weight": torch.ones(1, 3)})
    with pytest.raises(ValueError, match=r"softmax over one output.*task='regression'"):
        SampledEnsemble(model, posterior, 2)(torch.randn(4, 3))
    regression = SampledEnsemble(model, posterior, 2, task="regression")
    with pytest.raises(ValueError, match="task='regression'"):
        regression.sample_probs(torch.randn(4, 3))


def test_linear_model_matches_the_closed_form_predictive() -> None:
    # y = w.x + b with w ~ N(w0, diag(v)), b fixed: mean w0.x + b, variance sum_i v_i x_i^2
    model = nn.Linear(3, 1)
    w0, v = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.04, 0.09, 0.01]])
    ens = SampledEnsemble(
        model, DiagonalGaussian({"weight": w0}, {"weight": v}), 4000, task="regression", seed=1
    )
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    prediction = ens(x)
    assert isinstance(prediction, GaussianPrediction)
    mean, variance = prediction
    assert mean.shape == variance.shape == (2, 1)
    exact_mean = (x @ w0.T + model.bias).detach().numpy()
    exact_var = ((x**2) @ v.T).numpy()
    # 4000 samples: the variance's relative standard error is sqrt(2 / 4000) = 2.2%; 5 of them
    np.testing.assert_allclose(variance.numpy(), exact_var, rtol=0.11)
    assert (np.abs(mean.numpy() - exact_mean) <= 5 * np.sqrt(exact_var / 4000)).all()


def test_gaussian_head_adds_its_aleatoric_variance() -> None:
    model, x = GaussianHead(), torch.randn(5, 3)
    names = ("body.weight", "mean.weight")
    params = dict(model.named_parameters())
    mean = {n: params[n].detach() for n in names}
    zero = SampledEnsemble(
        model,
        DiagonalGaussian(mean, {n: torch.zeros_like(m) for n, m in mean.items()}),
        3,
        task="regression",
    )
    head_mean, head_var = model(x)
    torch.testing.assert_close(tuple(zero(x)), (head_mean, head_var))  # no epistemic part
    noisy = SampledEnsemble(
        model,
        DiagonalGaussian(mean, {n: torch.full_like(m, 0.05) for n, m in mean.items()}),
        6,
        task="regression",
    )
    means, variances = noisy.sample_regression(x)
    assert means.shape == variances.shape == (6, 5, 2)
    m, s2 = means.numpy().astype(np.float64), variances.numpy().astype(np.float64)
    total = np.mean(s2 + m**2, axis=0) - np.mean(m, axis=0) ** 2  # E[Var] + Var[E]
    np.testing.assert_allclose(noisy(x).variance.numpy(), total, rtol=1e-4, atol=1e-6)
    assert (noisy(x).variance > zero(x).variance.min()).any()


def test_regression_outputs_in_other_structures_need_output_fn() -> None:
    class DictHead(GaussianHead):
        def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
            mean, var = super().forward(x)
            return {"mu": mean, "var": var}

    model, x = DictHead(), torch.randn(4, 3)
    posterior = DiagonalGaussian(
        {"mean.bias": model.mean.bias.detach()}, {"mean.bias": torch.zeros(2)}
    )
    with pytest.raises(TypeError, match=r"regression mean and variance in a dict.*output_fn="):
        SampledEnsemble(model, posterior, 2, task="regression")(x)
    io = ModelIO(output_fn=lambda out: (out["mu"], out["var"]))
    prediction = SampledEnsemble(model, posterior, 2, task="regression", io=io)(x)
    torch.testing.assert_close(prediction.variance, model(x)["var"])


def test_mixture_moments_against_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    means, variances = torch.randn(7, 4, generator=g), torch.rand(7, 4, generator=g)
    mean, variance = mixture_moments(means, variances)
    np.testing.assert_allclose(mean.numpy(), means.numpy().mean(0), rtol=1e-6)
    expected = means.numpy().var(0) + variances.numpy().mean(0)  # ddof=0: the mixture's own
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        mixture_moments(means).variance.numpy(), means.numpy().var(0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="variances shape"):
        mixture_moments(means, variances[:, :2])
