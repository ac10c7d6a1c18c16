"""SampledEnsemble's batched evaluation: vmap equals the loop, chunking changes nothing, and a
model that vmap cannot trace falls back to the loop once and for good."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import tradi.inference.ensemble
from tradi import SampledEnsemble, WeightTracker
from tradi.posterior import DiagonalGaussian

# vmap turns n matmuls into one batched matmul: the float32 sums are ordered differently, so
# the two evaluations agree to rounding, not bit for bit.
LOGIT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def bn_dropout_net() -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(4 * 6 * 6, 5),
    )
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(10, 1, 8, 8, generator=g), torch.randint(0, 5, (10,))) for _ in range(4)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in data:  # a few steps so that BN statistics and weights are not at their init
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, data


def posterior_of(model: nn.Module) -> DiagonalGaussian:
    tracker = WeightTracker(model, init_mean="weights", init_variance=1e-2)
    return DiagonalGaussian(tracker.mean(), tracker.variance())


def reference_logits(model: nn.Module, ens: SampledEnsemble, x: Tensor) -> Tensor:
    """Each weight set loaded into a plain copy of the model: no functional_call, no vmap."""
    outs = []
    for index, weights in enumerate(ens._sets):
        plain = copy.deepcopy(model).eval()
        buffers = {} if ens._sets.buffers is None else ens._sets.buffers[index]
        plain.load_state_dict({**plain.state_dict(), **weights, **buffers})
        outs.append(plain(x))
    return torch.stack(outs)


@pytest.mark.parametrize("bn_update", [False, True])
def test_vmap_and_loop_agree_with_a_plain_reference(bn_update: bool) -> None:
    model, data = bn_dropout_net()
    posterior, x = posterior_of(model), data[0][0]
    bn_loader = data if bn_update else None
    by_vmap = SampledEnsemble(model, posterior, 6, bn_loader=bn_loader, batching="vmap")
    by_loop = SampledEnsemble(model, posterior, 6, bn_loader=bn_loader, batching="loop")
    expected = reference_logits(model, by_loop, x)
    torch.testing.assert_close(by_loop.sample_logits(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(by_vmap.sample_logits(x), expected, **LOGIT_TOLERANCE)
    torch.testing.assert_close(by_vmap(x), by_loop(x), rtol=0, atol=1e-6)
    # the per-sample BN statistics really differ, so stacking them is exercised, and the vmapped
    # re-estimation (all weight sets per pass over the loader) equals one pass per set
    if bn_update:
        assert not torch.equal(by_vmap._sets.buffers[0]["1.running_mean"], model[1].running_mean)
        assert (
            by_vmap._sets.stacked_buffers is not None and by_loop._sets.stacked_buffers is not None
        )
        for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
            torch.testing.assert_close(
                by_vmap._sets.stacked_buffers[name],
                by_loop._sets.stacked_buffers[name],
                **LOGIT_TOLERANCE,
            )


@pytest.mark.parametrize("cache", [True, False])
def test_chunking_does_not_change_the_prediction(cache: bool) -> None:
    model, data = bn_dropout_net()
    posterior, x = posterior_of(model), data[1][0]
    whole = SampledEnsemble(model, posterior, 7, batching="vmap", chunk_size=None)
    whole_logits = whole.sample_logits(x)
    for chunk_size in (1, 3, 7, 50):
        chunked = SampledEnsemble(
            model, posterior, 7, batching="vmap", chunk_size=chunk_size, cache=cache
        )
        torch.testing.assert_close(chunked.sample_logits(x), whole_logits, **LOGIT_TOLERANCE)
    # chunks of one sample are n separate forward passes: exactly the loop's numbers
    one_by_one = SampledEnsemble(model, posterior, 7, batching="vmap", chunk_size=1, cache=cache)
    loop = SampledEnsemble(model, posterior, 7, batching="loop")
    torch.testing.assert_close(
        one_by_one.sample_logits(x), loop.sample_logits(x), **LOGIT_TOLERANCE
    )


def mlp_net() -> nn.Module:
    """No convolution: "auto" tries vmap on it (a conv net on the CPU takes the loop)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5)
    )


@pytest.fixture
def auto_tries_vmap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make batching="auto" behave as on an accelerator: try vmap first, fall back if needed."""
    monkeypatch.setattr(tradi.inference.ensemble, "_prefers_loop", lambda device: False)


@pytest.mark.usefixtures("auto_tries_vmap")
def test_auto_chooses_vmap_for_a_traceable_model() -> None:
    model = mlp_net()
    ens = SampledEnsemble(model, posterior_of(model), 3)
    assert ens.batching_used is None
    ens(torch.randn(4, 1, 8, 8))
    assert ens.batching_used == "vmap"


def test_auto_takes_the_loop_on_the_cpu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    x = torch.randn(5, 1, 8, 8)
    posterior = posterior_of(model)
    auto = SampledEnsemble(model, posterior, 3)
    assert auto.batching_used == "loop"  # decided before any prediction
    forced = SampledEnsemble(model, posterior, 3, batching="vmap")
    torch.testing.assert_close(auto.sample_logits(x), forced.sample_logits(x), **LOGIT_TOLERANCE)


class DataDependent(nn.Module):
    """Branches on a value computed from the input: vmap cannot trace that."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm(self.linear(x))
        return out * 2 if out.sum() > 0 else out - 1


@pytest.mark.usefixtures("auto_tries_vmap")
def test_untraceable_model_falls_back_to_the_loop_once() -> None:
    torch.manual_seed(0)
    model = DataDependent()
    posterior = posterior_of(model)
    x = torch.randn(5, 4)
    bn_loader = [torch.randn(6, 4) for _ in range(3)]
    with pytest.raises(RuntimeError, match="data-dependent control flow"):
        SampledEnsemble(model, posterior, 4, batching="vmap")(x)
    with pytest.raises(RuntimeError, match="data-dependent control flow"):
        SampledEnsemble(model, posterior, 4, batching="vmap", bn_loader=bn_loader)
    auto = SampledEnsemble(model, posterior, 4, bn_loader=bn_loader)
    loop = SampledEnsemble(model, posterior, 4, batching="loop", bn_loader=bn_loader)
    assert auto._sets.stacked_buffers is not None and loop._sets.stacked_buffers is not None
    for name, stacked in loop._sets.stacked_buffers.items():
        assert torch.equal(auto._sets.stacked_buffers[name], stacked)
    torch.testing.assert_close(auto.sample_logits(x), loop.sample_logits(x), rtol=0, atol=0)
    assert auto.batching_used == "loop"
    expected = reference_logits(model, loop, -x)
    torch.testing.assert_close(auto.sample_logits(-x), expected, rtol=0, atol=0)


@pytest.mark.usefixtures("auto_tries_vmap")
def test_an_input_error_raises_and_leaves_the_choice_open() -> None:
    model = mlp_net()
    ens = SampledEnsemble(model, posterior_of(model), 2)
    with pytest.raises(RuntimeError):
        ens(torch.randn(3, 2, 8, 8))  # twice the input features: the loop fails too
    assert ens.batching_used is None


def test_batching_options_are_validated() -> None:
    model, _ = bn_dropout_net()
    posterior = posterior_of(model)
    with pytest.raises(ValueError, match="batching"):
        SampledEnsemble(model, posterior, 2, batching="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        SampledEnsemble(model, posterior, 2, chunk_size=0)


@pytest.mark.parametrize("average", ["probs", "logits"])
@pytest.mark.parametrize(("batching", "chunk_size"), [("loop", 8), ("vmap", 4), ("vmap", None)])
def test_the_streamed_average_equals_the_mean_over_stacked_samples(
    average: str, batching: str, chunk_size: int | None
) -> None:
    """ens(x) sums chunk by chunk (10 sets: chunks of 4 leave 2); the stacked reference is
    independent of that path: every sample's logits, then the average of eq. 6."""
    model, data = bn_dropout_net()
    x = data[0][0]
    ens = SampledEnsemble(
        model, posterior_of(model), 10, average=average, batching=batching, chunk_size=chunk_size
    )
    logits = reference_logits(model, ens, x)
    expected = logits.mean(0).softmax(1) if average == "logits" else logits.softmax(2).mean(0)
    torch.testing.assert_close(ens(x), expected, rtol=1e-5, atol=1e-6)
