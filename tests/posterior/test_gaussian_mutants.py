"""Tests written against the mutants that survived mutmut on `posterior/gaussian.py`
(docs/testing.md): both samplers draw on the mean's device; the kernel sampler's sample equals
its formula drawn by hand from the same generator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tradi.posterior import DiagonalGaussian, KernelGaussian

META = torch.device("meta")
DOUBLE = torch.float64


def test_diagonal_sample_is_drawn_on_the_means_device() -> None:
    mean = {"w": torch.empty(4, 3, device=META)}
    sample = DiagonalGaussian(mean, {"w": torch.empty(4, 3, device=META)}).sample()
    assert sample["w"].device == META
    assert sample["w"].shape == (4, 3)


def kernel_sample_by_hand(
    mean: Tensor, variance: Tensor, anchor: Tensor, phase: str, seed: int
) -> Tensor:
    """The class docstring's formula for rank 5 and scale 0.7, drawn in its order from one
    generator: w~ = mu + scale sqrt(2 / D) diag(s) cos(w* Omega^T + b) m, with Omega, then b
    per feature [1, D], then m; or Omega, m, then b per weight [P, D] (one block)."""
    g, rank, dtype = torch.Generator().manual_seed(seed), 5, mean.dtype
    omega = torch.randn(1, rank, generator=g, dtype=dtype)
    b = torch.rand(1, rank, generator=g, dtype=dtype) if phase == "feature" else None
    m = torch.randn(rank, 1, generator=g, dtype=dtype)
    if b is None:
        b = torch.rand(mean.numel(), rank, generator=g, dtype=dtype)
    z = variance.sqrt().reshape(-1, 1) * torch.cos(anchor.reshape(-1, 1) @ omega + 2 * math.pi * b)
    return mean + 0.7 * math.sqrt(2.0 / rank) * (z @ m).reshape(mean.shape)


@pytest.mark.parametrize("phase", ["feature", "weight"])
def test_kernel_sample_equals_the_formula_drawn_by_hand(phase: str) -> None:
    g = torch.Generator().manual_seed(1)
    mean, anchor = torch.randn(2, 3, 4, generator=g, dtype=DOUBLE)
    variance = torch.rand(3, 4, generator=g, dtype=DOUBLE)
    posterior = KernelGaussian(
        {"w": mean}, {"w": variance}, {"w": anchor}, rank=5, scale=0.7, phase=phase
    )
    sample = posterior.sample(torch.Generator().manual_seed(9))["w"]
    expected = kernel_sample_by_hand(mean, variance, anchor, phase, seed=9)
    torch.testing.assert_close(sample, expected, rtol=1e-12, atol=1e-12)


def test_kernel_sample_is_drawn_on_the_means_device() -> None:
    empty = {"w": torch.empty(4, 3, device=META)}
    sample = KernelGaussian(empty, empty, empty, rank=2).sample()
    assert sample["w"].device == META
    assert sample["w"].shape == (4, 3)


def test_mismatched_names_are_refused_with_the_exact_text() -> None:
    with pytest.raises(ValueError) as error:
        DiagonalGaussian({"a": torch.zeros(2)}, {"b": torch.zeros(2)})
    assert str(error.value) == "mean and variance must have the same parameter names"
