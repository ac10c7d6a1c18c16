"""tradi.inference.batchnorm: per-weight-set BatchNorm statistics in one pass over the loader, against an
independent NumPy reference, vmap against the loop, and the loader read once."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

import tradi
from tradi.inference.batchnorm import DEFAULT_BN_BATCHES, sampled_bn_statistics
from tradi.posterior import DiagonalGaussian


def two_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5), nn.BatchNorm1d(5)
    ).eval()


def stacked_weights(model: nn.Module, n: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        name: p.detach() + 0.3 * torch.randn(n, *p.shape, generator=g)
        for name, p in model.named_parameters()
    }


def batches(count: int = 4) -> list[Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(9, 4, generator=g) for _ in range(count)]


def numpy_reference(weights: dict[str, Tensor], j: int, xs: list[Tensor]) -> dict[str, np.ndarray]:
    """Sample j's statistics: the cumulative average over batches of each batch's mean and
    unbiased variance, layer after layer, the batch normalised with its own (biased) moments."""
    w = {name: t[j].double().numpy() for name, t in weights.items()}
    sums: dict[str, list[np.ndarray]] = {k: [] for k in ("1m", "1v", "4m", "4v")}
    for x in xs:
        h = x.double().numpy() @ w["0.weight"].T + w["0.bias"]
        sums["1m"].append(h.mean(0))
        sums["1v"].append(h.var(0, ddof=1))
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * w["1.weight"] + w["1.bias"]
        z = np.maximum(h, 0) @ w["3.weight"].T + w["3.bias"]
        sums["4m"].append(z.mean(0))
        sums["4v"].append(z.var(0, ddof=1))
    return {key: np.mean(values, 0) for key, values in sums.items()}


def run(model: nn.Module, weights: dict[str, Tensor], xs: list[Tensor], **kw: object) -> dict:
    def functional(tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, tensors, (x,))

    return sampled_bn_statistics(model, iter(xs), weights, functional, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [{"batching": "loop"}, {"batching": "vmap", "chunk_size": 2}, {"batching": "auto"}],
    ids=["loop", "vmap chunks of 2 of 5", "auto"],
)
def test_statistics_equal_an_independent_numpy_reference(options: dict) -> None:
    model = two_bn_net()
    before = {n: b.clone() for n, b in model.named_buffers()}
    weights, xs = stacked_weights(model, 5), batches()
    stats = run(model, weights, xs, **options)
    for j in range(5):
        ref = numpy_reference(weights, j, xs)
        for layer in ("1", "4"):
            np.testing.assert_allclose(
                stats[f"{layer}.running_mean"][j], ref[f"{layer}m"], 1e-4, 1e-5
            )
            np.testing.assert_allclose(
                stats[f"{layer}.running_var"][j], ref[f"{layer}v"], 1e-4, 1e-5
            )
    assert stats["1.num_batches_tracked"].tolist() == [4] * 5
    # the model's own buffers, mode and momenta are as they were
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
    assert not model.training and model[1].momentum == 0.1


def test_nothing_to_re_estimate_gives_an_empty_dict() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    assert run(model, stacked_weights(model, 2), batches()) == {}
    assert run(two_bn_net(), stacked_weights(two_bn_net(), 2), []) == {}


class CountingLoader:
    def __init__(self, xs: list[Tensor]) -> None:
        self.xs, self.passes = xs, 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.passes += 1
        return iter([(x,) for x in self.xs])


@pytest.mark.parametrize(("cache", "passes"), [(True, 1), (False, 3)])
def test_the_loader_is_read_once_for_cached_weight_sets(cache: bool, passes: int) -> None:
    """All 6 cached sets share one pass; uncached ones are drawn chunk_size (2) at a time, one
    pass per chunk; both give the same statistics (no dropout: the same batches)."""
    model = two_bn_net()
    posterior = DiagonalGaussian(
        {n: p.detach() for n, p in model.named_parameters()},
        {n: torch.full_like(p, 0.01) for n, p in model.named_parameters()},
    )
    loader = CountingLoader(batches())
    ens = tradi.SampledEnsemble(
        model, posterior, 6, bn_loader=loader, cache=cache, chunk_size=2, bn_batches=None
    )
    assert loader.passes == passes
    reference = tradi.SampledEnsemble(model, posterior, 6, bn_loader=batches(), bn_batches=None)
    assert ens._sets.stacked_buffers is not None and reference._sets.stacked_buffers is not None
    for name, t in reference._sets.stacked_buffers.items():
        torch.testing.assert_close(ens._sets.stacked_buffers[name], t, rtol=1e-6, atol=1e-6)


def test_the_default_reads_the_first_bn_batches_only() -> None:
    model = two_bn_net()
    posterior = DiagonalGaussian(
        {n: p.detach() for n, p in model.named_parameters()},
        {n: torch.full_like(p, 0.01) for n, p in model.named_parameters()},
    )
    xs = batches(DEFAULT_BN_BATCHES + 3)
    default = tradi.SampledEnsemble(model, posterior, 2, bn_loader=[(x,) for x in xs])
    first = tradi.SampledEnsemble(
        model, posterior, 2, bn_loader=[(x,) for x in xs[:DEFAULT_BN_BATCHES]], bn_batches=None
    )
    assert default._sets.stacked_buffers is not None and first._sets.stacked_buffers is not None
    assert (
        default._sets.stacked_buffers["1.num_batches_tracked"].tolist() == [DEFAULT_BN_BATCHES] * 2
    )
    for name, t in first._sets.stacked_buffers.items():
        assert torch.equal(default._sets.stacked_buffers[name], t)


def test_dropout_draws_different_masks_for_each_set_under_vmap_and_the_loop() -> None:
    """Identical weight sets with dropout before a BatchNorm get different statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.BatchNorm1d(6)).eval()
    same = {n: p.detach().expand(3, *p.shape).clone() for n, p in model.named_parameters()}
    for batching in ("loop", "vmap"):
        stats = run(model, same, batches(), batching=batching)
        means = stats["2.running_mean"]
        assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])


# Written against the mutants that survived mutmut on `batchnorm.py` (docs/testing.md): which
# path each batching takes, and the fallback of batching="auto" when vmap fails.


class CountingFunctional:
    """`functional_call` on `model`, counting its calls (a vmapped call counts once for its
    chunk). With `refuse_vmap`, the forward runs (and updates the statistics it was given),
    then a vmapped call raises RuntimeError("no vmap") (`.item()` cannot be traced)."""

    def __init__(self, model: nn.Module, refuse_vmap: bool = False) -> None:
        self.model, self.refuse_vmap, self.calls = model, refuse_vmap, 0

    def __call__(self, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        self.calls += 1
        out = functional_call(self.model, tensors, (x,))
        if self.refuse_vmap:
            try:
                out.sum().item()
            except RuntimeError:
                raise RuntimeError("no vmap") from None
        return out


def counted_run(batching: str, refuse_vmap: bool = False) -> tuple[dict, int]:
    """3 weight sets, chunks of 2, 2 batches: the statistics and the functional's calls."""
    model = two_bn_net()
    functional = CountingFunctional(model, refuse_vmap)
    stats = sampled_bn_statistics(
        model,
        iter(batches(2)),
        stacked_weights(model, 3),
        functional,
        batching=batching,  # type: ignore[arg-type]
        chunk_size=2,
    )
    return stats, functional.calls


@pytest.mark.parametrize(("batching", "calls"), [("loop", 6), ("vmap", 4), ("auto", 4)])
def test_each_batching_calls_the_functional_once_per_set_or_per_chunk(
    batching: str, calls: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop: 3 calls per batch; vmap: 2 (chunks of 2 of 3 sets); "auto" keeps vmap for
    every batch once the first succeeded, and logs nothing. Statistics as the loop's."""
    with caplog.at_level(logging.INFO, logger="tradi.inference.batchnorm"):
        stats, counted = counted_run(batching)
    assert counted == calls and caplog.records == []
    reference = run(two_bn_net(), stacked_weights(two_bn_net(), 3), batches(2))
    assert stats.keys() == reference.keys()
    for name, t in reference.items():
        torch.testing.assert_close(stats[name], t, rtol=1e-5, atol=1e-6)


def test_auto_falls_back_to_the_loop_for_good_when_vmap_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One failed vmapped call (its partial updates dropped), then the loop for both batches:
    exactly the loop's statistics; the failure logged once, with its text."""
    with caplog.at_level(logging.INFO, logger="tradi.inference.batchnorm"):
        stats, calls = counted_run("auto", refuse_vmap=True)
    assert calls == 1 + 3 + 3
    assert [r.getMessage() for r in caplog.records] == [
        "BatchNorm re-estimation under vmap failed (no vmap): looping"
    ]
    reference, _ = counted_run("loop", refuse_vmap=True)
    assert stats.keys() == reference.keys()
    for name, t in reference.items():
        assert torch.equal(stats[name], t), name
