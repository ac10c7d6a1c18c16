"""Posterior state dicts load under weights_only=True and sample exactly as before; chunked
sampling draws the same weights whatever the block size; the SWAG ring keeps its order."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from tradi.posterior import (
    DiagonalGaussian,
    IsotropicGaussian,
    KernelGaussian,
    StatefulPosterior,
    SWAGCollector,
    SWAGPosterior,
    gaussian,
    load_posterior,
)


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _posteriors() -> list[StatefulPosterior]:
    g = torch.Generator().manual_seed(0)
    mean = {"a": torch.randn(4, 3, generator=g), "b": torch.randn(5, generator=g)}
    var = {n: torch.rand(t.shape, generator=g) for n, t in mean.items()}
    anchor = {n: torch.randn(t.shape, generator=g) for n, t in mean.items()}
    deviations = {n: torch.randn(3, *t.shape, generator=g) for n, t in mean.items()}
    return [
        DiagonalGaussian(mean, var, scale=2.0),
        KernelGaussian(mean, var, anchor, rank=4, scale=3.0),
        KernelGaussian(mean, var, anchor, rank=2, phase="weight"),
        IsotropicGaussian(mean, 0.1),
        SWAGPosterior(mean, var, deviations, covariance_scale=0.3),
    ]


@pytest.mark.parametrize("posterior", _posteriors(), ids=lambda p: p.kind)
def test_state_dict_round_trip_samples_the_same(posterior: StatefulPosterior) -> None:
    loaded = load_posterior(_round_trip(posterior.state_dict()))
    assert type(loaded) is type(posterior)
    for seed in (0, 1):
        a = posterior.sample(torch.Generator().manual_seed(seed))
        b = loaded.sample(torch.Generator().manual_seed(seed))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name])


def test_loading_the_wrong_kind_is_refused() -> None:
    diagonal, kernel = _posteriors()[:2]
    with pytest.raises(ValueError, match="cannot load a 'kernel' posterior state"):
        diagonal.load_state_dict(kernel.state_dict())
    with pytest.raises(ValueError, match="unknown posterior kind 'nope'"):
        load_posterior({"kind": "nope"})


@pytest.mark.parametrize("block", [1, 7, 64])
def test_kernel_samples_do_not_depend_on_the_block_size(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    posterior = _posteriors()[1]  # rank 4: blocks of 1 row (block < rank) up to whole tensors
    whole = posterior.sample(torch.Generator().manual_seed(3))
    monkeypatch.setattr(gaussian, "CHUNK_ELEMENTS", block)
    blocked = posterior.sample(torch.Generator().manual_seed(3))
    for name in whole:
        torch.testing.assert_close(blocked[name], whole[name], rtol=1e-6, atol=1e-6)


def test_swag_ring_state_round_trip_after_wrapping() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    collector = SWAGCollector(model, max_rank=3)

    def step() -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        collector.collect()

    for _ in range(5):  # wraps the ring of 3 columns
        step()
    other = SWAGCollector(model, max_rank=3)
    other.load_state_dict(_round_trip(collector.state_dict()))
    for name in collector.names:
        assert torch.equal(other.deviations()[name], collector.deviations()[name])
    step()
    other.collect()  # the loaded ring continues at the right slot
    for name in collector.names:
        torch.testing.assert_close(other.deviations()[name], collector.deviations()[name])
