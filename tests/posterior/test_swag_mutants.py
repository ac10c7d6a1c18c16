"""Tests written against the mutants that survived mutmut on `posterior/swag.py`
(docs/testing.md): a sample against SWAG's formula drawn by hand from the same generator, the
documented defaults, float32 state, copies, the loader's checks and every refusal's text."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tradi.posterior import SWAGCollector, SWAGPosterior

META = torch.device("meta")


def _moments(rank: int) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(2)
    mean = {"a": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)}
    variance = {n: torch.rand(t.shape, generator=g) for n, t in mean.items()}
    deviations = {n: torch.randn(rank, *t.shape, generator=g) for n, t in mean.items()}
    return mean, variance, deviations


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_sample_is_swags_formula_with_the_default_half_covariance(rank: int) -> None:
    mean, variance, deviations = _moments(rank)
    posterior = SWAGPosterior(mean, variance, deviations)
    assert posterior.covariance_scale == 0.5
    sample = posterior.sample(torch.Generator().manual_seed(5))
    # by hand: z2 ~ N(0, I_K) first, then z1 per tensor; w = mean + sqrt(1/2) (sqrt(var) z1
    # + D z2 / sqrt(max(K - 1, 1)))
    g = torch.Generator().manual_seed(5)
    z2 = torch.randn(rank, generator=g, dtype=torch.float32).double()
    for name, mu in mean.items():
        z1 = torch.randn(mu.shape, generator=g, dtype=torch.float32).double()
        columns = deviations[name].double().reshape(rank, -1)
        low_rank = (z2 @ columns).reshape(mu.shape) / math.sqrt(max(rank - 1, 1))
        expected = mu.double() + math.sqrt(0.5) * (variance[name].double().sqrt() * z1 + low_rank)
        torch.testing.assert_close(sample[name].double(), expected, rtol=1e-5, atol=1e-6)


def test_swag_posterior_refusals_say_what_is_wrong() -> None:
    mean, variance, deviations = _moments(2)
    cases = [
        (
            (mean, {"a": variance["a"]}, deviations, 0.5),
            "mean, variance and deviations must have the same parameter names",
        ),
        ((mean, variance, deviations, -1.0), "covariance_scale must be >= 0, got -1.0"),
        (
            (mean, variance, {**deviations, "b": torch.zeros(3, 4)}, 0.5),
            "every deviation tensor needs the same number of columns, got {2, 3}",
        ),
        (
            (mean, {**variance, "a": torch.ones(2, 3)}, deviations, 0.5),
            "a: variance/deviation shapes do not match the mean",
        ),
        (
            (mean, variance, {**deviations, "b": torch.zeros(2, 5)}, 0.5),
            "b: variance/deviation shapes do not match the mean",
        ),
    ]
    for (m, v, d, scale), message in cases:
        with pytest.raises(ValueError) as refused:
            SWAGPosterior(m, v, d, covariance_scale=scale)
        assert str(refused.value) == message


def _collector(model: nn.Module, **options: object) -> SWAGCollector:
    return SWAGCollector(model, **options)  # type: ignore[arg-type]


def _move(model: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_collector_defaults_keep_20_columns_and_half_the_covariance() -> None:
    model = nn.Linear(2, 1)
    collector = _collector(model)
    g = torch.Generator().manual_seed(0)
    for _ in range(21):
        _move(model, g)
        collector.collect()
    assert collector.deviations()["weight"].shape == (20, 1, 2)
    assert collector.posterior().covariance_scale == 0.5


def test_a_rank_of_one_is_accepted_and_below_refused_with_its_text() -> None:
    model = nn.Linear(2, 1)
    collector = _collector(model, max_rank=1)
    collector.collect()
    assert collector.deviations()["bias"].shape == (1, 1)
    with pytest.raises(ValueError) as refused:
        _collector(model, max_rank=0)
    assert str(refused.value) == "max_rank must be >= 1, got 0"


def test_the_filter_reads_the_name_and_the_owning_module() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    chosen = _collector(
        model, param_filter=lambda n, m, p: n.startswith("1.") and isinstance(m, nn.Linear)
    )
    assert chosen.names == ["1.weight", "1.bias"]
    with pytest.raises(ValueError) as refused:
        _collector(model, param_filter=lambda n, m, p: False)
    assert str(refused.value) == "no parameter of the model is selected for SWAG"


def test_state_is_float32_for_a_float64_model() -> None:
    model = nn.Linear(2, 1).double()
    collector = _collector(model, max_rank=2)
    iterates = []
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        _move(model, g)
        collector.collect()
        iterates.append(model.weight.detach().float().clone())
    mean = (iterates[0] + iterates[1]) / 2
    assert collector.mean()["weight"].dtype == torch.float32
    assert collector.variance()["weight"].dtype == torch.float32
    assert collector.deviations()["weight"].dtype == torch.float32
    torch.testing.assert_close(collector.mean()["weight"], mean)
    # the last column is the last iterate's deviation from the running mean including it
    torch.testing.assert_close(collector.deviations()["weight"][1], iterates[1] - mean)


def test_deviations_are_copies_when_the_ring_is_exactly_full() -> None:
    model = nn.Linear(2, 1)
    collector = _collector(model, max_rank=2)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        _move(model, g)
        collector.collect()
    before = collector.deviations()["weight"]
    kept = before.clone()
    _move(model, g)
    collector.collect()  # writes slot 0 of the ring
    assert torch.equal(before, kept)


def test_posterior_without_an_iterate_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError) as refused:
        _collector(nn.Linear(2, 1)).posterior()
    assert str(refused.value) == "SWAG collected no iterate: did training reach its start epoch?"


def _collected(max_rank: int, iterates: int) -> tuple[nn.Module, SWAGCollector]:
    model = nn.Linear(3, 2)
    collector = _collector(model, max_rank=max_rank)
    g = torch.Generator().manual_seed(4)
    for _ in range(iterates):
        _move(model, g)
        collector.collect()
    return model, collector


def test_a_partly_filled_ring_loads_in_its_order() -> None:
    model, collector = _collected(max_rank=4, iterates=3)
    other = _collector(model, max_rank=4)
    other.load_state_dict(collector.state_dict())
    for name in collector.names:
        assert torch.equal(other.deviations()[name], collector.deviations()[name])


def test_loading_refuses_another_rank_shapes_or_missing_tensors_with_their_text() -> None:
    model, collector = _collected(max_rank=3, iterates=2)
    state = collector.state_dict()
    mismatch = "SWAG state does not match this collector (parameter names or rank)"
    with pytest.raises(ValueError) as rank:
        _collector(model, max_rank=2).load_state_dict(state)  # same names, another rank
    assert str(rank.value) == mismatch
    bad_shape = {**state, "mean": [torch.zeros(1), state["mean"][1]]}
    with pytest.raises(ValueError) as shapes:
        _collector(model, max_rank=3).load_state_dict(bad_shape)
    assert str(shapes.value) == "SWAG state has shapes that do not match the model"
    for key in ("sq_mean", "deviations"):  # one tensor short: refused, nothing half-loaded
        short = {**state, key: state[key][:1]}
        with pytest.raises(ValueError):
            _collector(model, max_rank=3).load_state_dict(short)


def test_a_cpu_state_loads_onto_the_collectors_device() -> None:
    _, collector = _collected(max_rank=2, iterates=2)
    on_meta = _collector(nn.Linear(3, 2, device=META), max_rank=2)
    on_meta.load_state_dict(collector.state_dict())
    assert on_meta.mean()["weight"].device == META
    assert on_meta.variance()["weight"].device == META
