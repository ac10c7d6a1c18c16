"""Tests written against the mutants that survived mutmut on `posterior/gaussian.py`
(docs/testing.md): the diagonal sampler draws on the mean's device."""

from __future__ import annotations

import torch

from tradi.posterior import DiagonalGaussian

META = torch.device("meta")


def test_diagonal_sample_is_drawn_on_the_means_device() -> None:
    mean = {"w": torch.empty(4, 3, device=META)}
    sample = DiagonalGaussian(mean, {"w": torch.empty(4, 3, device=META)}).sample()
    assert sample["w"].device == META
    assert sample["w"].shape == (4, 3)
