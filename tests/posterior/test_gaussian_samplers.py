"""Sampler statistics against TRADI.md section 3, with tolerances stated in sampling-error units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tradi import DiagonalGaussian, KernelGaussian, WeightPosterior


def draw(posterior: WeightPosterior, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    samples = [posterior.sample(g) for _ in range(n)]
    return {k: torch.stack([s[k] for s in samples]).double().numpy() for k in samples[0]}


def test_diagonal_mean_variance_and_chi_square_coverage() -> None:
    g = torch.Generator().manual_seed(1)
    mean = {"w": torch.randn(5, 4, generator=g), "b": torch.randn(3, generator=g)}
    var = {"w": torch.rand(5, 4, generator=g) + 0.1, "b": torch.rand(3, generator=g) * 1e-4}
    n, scale = 20_000, 2.0
    s = draw(DiagonalGaussian(mean, var, scale=scale), n)
    for k in mean:
        sd = scale * var[k].double().sqrt().numpy()
        # mean within 5 standard errors, variance within 5 sd of its estimator (sqrt(2/n) relative)
        assert np.all(np.abs(s[k].mean(0) - mean[k].numpy()) < 5 * sd / math.sqrt(n))
        assert np.all(np.abs(s[k].var(0, ddof=1) / sd**2 - 1) < 5 * math.sqrt(2 / n))
    # coverage: sum of squared z-scores over all 23 weights is chi2(23); its 95% region holds
    # 95% of the samples (binomial sd 0.15%; tolerance 4 sd)
    z2 = sum(
        (((s[k] - mean[k].numpy()) / (scale * var[k].double().sqrt().numpy())) ** 2)
        .reshape(n, -1)
        .sum(1)
        for k in mean
    )
    inside = np.mean(z2 <= stats.chi2.ppf(0.95, df=23))
    assert abs(inside - 0.95) < 4 * math.sqrt(0.95 * 0.05 / n)


def kernel_reference(anchor: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Sigma_ij = s_i s_j exp(-(w*_i - w*_j)^2 / 2) (TRADI.md section 3)."""
    diff = anchor[:, None] - anchor[None, :]
    return sd[:, None] * sd[None, :] * np.exp(-(diff**2) / 2)


@pytest.mark.parametrize("rank", [1, 10])
def test_kernel_covariance_equals_kernel_formula(rank: int) -> None:
    anchor = torch.tensor([[-1.0, -0.5, 0.0], [0.2, 1.0, 2.5]])
    var = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.7, 1.0]])
    mean = torch.full_like(anchor, 3.0)
    n = 40_000
    post = KernelGaussian({"w": mean}, {"w": var}, {"w": anchor}, rank=rank, scale=0.5)
    s = draw(post, n)["w"].reshape(n, -1)
    sd = 0.5 * var.double().sqrt().numpy().ravel()
    expected = kernel_reference(anchor.double().numpy().ravel(), sd)
    empirical = np.cov(s, rowvar=False)
    # normalised by s_i s_j, the per-sample products have variance <= ~3 for rank 1: the standard
    # error of each entry is <= sqrt(3 / n) ~ 0.009; tolerance 0.05
    norm = sd[:, None] * sd[None, :]
    np.testing.assert_allclose(empirical / norm, expected / norm, atol=0.05)
    np.testing.assert_allclose(s.mean(0), 3.0, atol=5 * sd.max() / math.sqrt(n) * math.sqrt(3))
    # the cross-covariance is real: far from the diagonal-only alternative
    assert abs(empirical[0, 1] / norm[0, 1] - 0.0) > 0.5


def test_public_code_per_weight_phase_is_diagonal_in_effect() -> None:
    anchor = torch.tensor([0.0, 0.1, 0.2, 0.3])
    var = torch.tensor([1.0, 2.0, 0.5, 1.0])
    post = KernelGaussian({"w": torch.zeros(4)}, {"w": var}, {"w": anchor}, rank=10, phase="weight")
    s = draw(post, 40_000)["w"]
    c = np.cov(s, rowvar=False)
    sd = var.double().sqrt().numpy()
    norm = sd[:, None] * sd[None, :]
    np.testing.assert_allclose(c / norm, np.eye(4), atol=0.05)
    # the per-feature default correlates these close weights almost fully
    c_feature = np.cov(
        draw(KernelGaussian({"w": torch.zeros(4)}, {"w": var}, {"w": anchor}), 40_000)["w"],
        rowvar=False,
    )
    assert c_feature[0, 1] / norm[0, 1] > 0.9


def test_zero_scale_returns_the_mean_and_negative_variance_is_clamped() -> None:
    mean = {"w": torch.randn(4, 3)}
    var = {"w": torch.full((4, 3), -1e-12)}  # rounding can leave these; never NaN
    for post in (
        DiagonalGaussian(mean, var),
        KernelGaussian(mean, var, {"w": torch.randn(4, 3)}),
        DiagonalGaussian(mean, {"w": torch.ones(4, 3)}, scale=0.0),
    ):
        assert torch.equal(post.sample(torch.Generator().manual_seed(0))["w"], mean["w"])


def test_samples_are_reproducible_from_the_generator() -> None:
    post = KernelGaussian({"w": torch.zeros(7)}, {"w": torch.ones(7)}, {"w": torch.randn(7)})
    a = post.sample(torch.Generator().manual_seed(5))["w"]
    b = post.sample(torch.Generator().manual_seed(5))["w"]
    c = post.sample(torch.Generator().manual_seed(6))["w"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        DiagonalGaussian({"w": torch.zeros(3)}, {"w": torch.zeros(4)})
    with pytest.raises(ValueError, match="same parameter names"):
        DiagonalGaussian({"w": torch.zeros(3)}, {"v": torch.zeros(3)})
    with pytest.raises(ValueError, match="rank"):
        KernelGaussian({"w": torch.zeros(3)}, {"w": torch.zeros(3)}, {"w": torch.zeros(3)}, rank=0)
    with pytest.raises(ValueError, match="scale"):
        DiagonalGaussian({"w": torch.zeros(3)}, {"w": torch.zeros(3)}, scale=-1.0)
