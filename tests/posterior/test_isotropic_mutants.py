"""Tests written against the mutants that survived mutmut on `posterior/isotropic.py` and
`posterior/state.py` (docs/testing.md): the Gaussian perturbation's draw against a reference
drawn by hand from the same generator, its refusals' exact texts, and the state loader's."""

from __future__ import annotations

import pytest
import torch

from tradi.posterior import DiagonalGaussian, IsotropicGaussian

META = torch.device("meta")


def _weights(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randn(3, 2, generator=g, dtype=dtype), "b": torch.randn(4, generator=g)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_is_the_weights_plus_sigma_times_the_generators_normals(dtype: torch.dtype) -> None:
    weights = _weights(dtype)
    sample = IsotropicGaussian(weights, 0.25).sample(torch.Generator().manual_seed(7))
    # the reference: the same generator's N(0, 1) draws, tensor by tensor in the weights' order
    # and dtype, scaled by sigma = 0.25 and added to w*
    g = torch.Generator().manual_seed(7)
    for name, w in weights.items():
        expected = w + 0.25 * torch.randn(w.shape, generator=g, dtype=w.dtype)
        assert sample[name].dtype == w.dtype
        torch.testing.assert_close(sample[name], expected, rtol=0, atol=0)


def test_sample_is_drawn_on_the_weights_device() -> None:
    sample = IsotropicGaussian({"w": torch.empty(3, device=META)}, 0.1).sample()
    assert sample["w"].device == META


def test_sigma_zero_is_accepted_and_samples_the_weights_themselves() -> None:
    weights = _weights()
    sample = IsotropicGaussian(weights, 0.0).sample(torch.Generator().manual_seed(0))
    for name, w in weights.items():
        assert torch.equal(sample[name], w)


def test_weights_are_copied_at_construction() -> None:
    weights = _weights()
    posterior = IsotropicGaussian(weights, 0.0)
    kept = {n: w.clone() for n, w in weights.items()}
    for w in weights.values():
        w.add_(1.0)
    for name, value in posterior.sample().items():
        assert torch.equal(value, kept[name])


def test_isotropic_refusals_say_what_is_wrong() -> None:
    with pytest.raises(ValueError) as empty:
        IsotropicGaussian({}, 0.1)
    assert str(empty.value) == "IsotropicGaussian needs at least one weight tensor to perturb"
    with pytest.raises(ValueError) as negative:
        IsotropicGaussian(_weights(), -0.5)
    assert str(negative.value) == "sigma must be >= 0, got -0.5"


def test_state_loading_refusals_name_the_kinds_and_the_missing_fields() -> None:
    posterior = IsotropicGaussian(_weights(), 0.1)
    diagonal = DiagonalGaussian(_weights(), {n: w.abs() for n, w in _weights().items()})
    with pytest.raises(ValueError) as other:
        posterior.load_state_dict(diagonal.state_dict())
    assert str(other.value) == "cannot load a 'diagonal' posterior state into IsotropicGaussian"
    state = posterior.state_dict()
    del state["sigma"]
    with pytest.raises(ValueError) as missing:
        posterior.load_state_dict(state)
    assert str(missing.value) == "isotropic posterior state misses ['sigma']"
    assert posterior.sigma == 0.1  # nothing was replaced
