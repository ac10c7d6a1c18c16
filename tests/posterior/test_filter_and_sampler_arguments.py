"""Arguments of the Kalman filter's configuration and of the Gaussian samplers: the values
defaults take, the edges of what is refused, and that a sampler draws from the generator it is
given (mutants that `make mutate` found unguarded; docs/testing.md)."""

from __future__ import annotations

import pytest
import torch

from tradi import DiagonalGaussian, KernelGaussian
from tradi.tracking.kalman import KalmanConfig, process_noise_for_gain, steady_state_gain


@pytest.mark.parametrize("name", ["q_mean", "r_mean", "q_var", "r_var"])
def test_noise_variances_must_be_positive_not_zero(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^KalmanConfig\.{name} must be > 0, got 0\.0$"):
        KalmanConfig(**{name: 0.0})
    KalmanConfig(**{name: 1e-12})


def test_initial_variance_may_be_zero_not_negative() -> None:
    assert KalmanConfig(p0=0.0).p0 == 0.0
    with pytest.raises(ValueError, match=r"^KalmanConfig\.p0 must be >= 0, got -1\.0$"):
        KalmanConfig(p0=-1.0)


def test_from_memory_defaults_and_gains() -> None:
    config = KalmanConfig.from_memory(100, 400)
    assert (config.r_mean, config.r_var, config.p0) == (10.0, 10.0, 0.0)
    assert config.steady_state_gains == pytest.approx((1 / 100, 1 / 400), rel=1e-9)
    other = KalmanConfig.from_memory(100, 400, r=2.0, p0=0.5)
    assert (other.r_mean, other.r_var, other.p0) == (2.0, 2.0, 0.5)
    assert steady_state_gain(other.q_mean, 2.0) == pytest.approx(1 / 100, rel=1e-9)


@pytest.mark.parametrize("gain", [0.0, 1.0, -0.1])
def test_a_gain_outside_the_open_unit_interval_is_refused(gain: float) -> None:
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        process_noise_for_gain(gain, 10.0)


def test_diagonal_defaults_to_unit_scale_and_keeps_it() -> None:
    mean, variance = {"w": torch.zeros(4)}, {"w": torch.full((4,), 4.0)}
    assert DiagonalGaussian(mean, variance).scale == 1.0
    torch.testing.assert_close(DiagonalGaussian(mean, variance).std["w"], torch.full((4,), 2.0))
    assert DiagonalGaussian(mean, variance, scale=3.0).scale == 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samplers_draw_from_the_given_generator_in_the_means_dtype(dtype: torch.dtype) -> None:
    mean = {"w": torch.zeros(6, dtype=dtype)}
    variance = {"w": torch.ones(6, dtype=dtype)}
    anchor = {"w": torch.linspace(-1, 1, 6, dtype=dtype)}
    for posterior in (
        DiagonalGaussian(mean, variance),
        KernelGaussian(mean, variance, anchor, rank=4),
    ):
        torch.manual_seed(0)
        first = posterior.sample(torch.Generator().manual_seed(7))["w"]
        torch.manual_seed(1)  # the global state must not matter
        second = posterior.sample(torch.Generator().manual_seed(7))["w"]
        assert first.dtype == dtype
        assert torch.equal(first, second)
        expected = torch.randn(6, generator=torch.Generator().manual_seed(7), dtype=dtype)
        if isinstance(posterior, DiagonalGaussian):
            assert torch.equal(first, expected)  # mu + 1 * m, m drawn in the mean's dtype


def test_kernel_scale_multiplies_the_standard_deviation() -> None:
    mean, variance, anchor = {"w": torch.zeros(5)}, {"w": torch.ones(5)}, {"w": torch.zeros(5)}
    one = KernelGaussian(mean, variance, anchor, rank=3).sample(torch.Generator().manual_seed(2))
    three = KernelGaussian(mean, variance, anchor, rank=3, scale=3.0).sample(
        torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(three["w"], 3 * one["w"])
    assert KernelGaussian(mean, variance, anchor).rank == 10


def test_kernel_accepts_zero_scale_and_names_bad_arguments() -> None:
    mean, variance, anchor = {"w": torch.ones(3)}, {"w": torch.ones(3)}, {"w": torch.zeros(3)}
    zero = KernelGaussian(mean, variance, anchor, scale=0.0)
    assert torch.equal(zero.sample(torch.Generator().manual_seed(0))["w"], mean["w"])
    with pytest.raises(ValueError, match=r"^scale must be >= 0, got -1\.0$"):
        KernelGaussian(mean, variance, anchor, scale=-1.0)
    with pytest.raises(ValueError, match=r"^phase must be 'feature' or 'weight', got 'pixel'$"):
        KernelGaussian(mean, variance, anchor, phase="pixel")  # type: ignore[arg-type]
