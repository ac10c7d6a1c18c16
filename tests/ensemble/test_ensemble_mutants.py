"""Tests written against the mutants that survived mutmut on `ensemble.py` (docs/testing.md):
BatchNorm statistics after a trunk for a model that reads its input outside modules and for
one weight set, batching="loop" never trying vmap, the settings a saved ensemble restores, and
the exact text of every refusal."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from torch import Tensor, nn

from tradi import DiagonalGaussian, SampledEnsemble
from tradi.inference.regression import GaussianPrediction


class SkipFromInput(nn.Module):
    """BatchNorm after the sampled head, and the input read by functional code after it."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 6)
        self.head = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.bn(self.head(self.trunk(x))) + x.sum(1, keepdim=True))


class NotVmappable(nn.Module):
    """`.item()` of a weight in forward: vmap over weight sets cannot trace it, a loop can."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.bn(self.linear(x)) * float(self.linear.weight.abs().mean().item()))


def _posterior(model: nn.Module, only: str = "") -> DiagonalGaussian:
    """Variance 0.05 around every parameter whose name starts with `only`, 0 elsewhere: the
    same draws, so the same sampled weights, as sampling every parameter and keeping those."""
    mean = {n: p.detach().clone() for n, p in model.named_parameters()}
    variance = {n: torch.full_like(m, 0.05 if n.startswith(only) else 0.0) for n, m in mean.items()}
    return DiagonalGaussian(mean, variance)


def _batches(features: int) -> list[tuple[Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, features, generator=g),) for _ in range(3)]


@pytest.mark.parametrize("n_samples", [1, 3])
def test_statistics_after_the_trunk_equal_full_evaluation(n_samples: int) -> None:
    torch.manual_seed(0)
    model = SkipFromInput().eval()
    batches, x = _batches(4), torch.randn(7, 4)
    options = {"bn_loader": batches, "batching": "loop", "seed": 3}
    cheap = SampledEnsemble(model, _posterior(model), n_samples, sample_modules=["head"], **options)
    full = SampledEnsemble(model, _posterior(model, only="head."), n_samples, **options)
    torch.testing.assert_close(cheap.sample_logits(x), full.sample_logits(x))


def test_batching_loop_never_tries_vmap(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = NotVmappable().eval()
    with caplog.at_level(logging.INFO, logger="tradi.inference.ensemble"):
        ensemble = SampledEnsemble(
            model, _posterior(model), 2, bn_loader=_batches(3), batching="loop"
        )
        ensemble(torch.randn(5, 3))
    assert [r.getMessage() for r in caplog.records] == []
    assert ensemble.batching_used == "loop"


def _reload(ensemble: SampledEnsemble, model: nn.Module, **options: object) -> SampledEnsemble:
    buffer = io.BytesIO()
    torch.save(ensemble.state_dict(), buffer)
    buffer.seek(0)
    return SampledEnsemble.from_state_dict(model, torch.load(buffer, weights_only=True), **options)


def test_a_reloaded_ensemble_keeps_its_averaging_and_task_and_takes_the_options() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x = torch.randn(6, 3)
    logits = SampledEnsemble(model, _posterior(model), 3, average="logits", seed=2)
    loaded = _reload(logits, nn.Linear(3, 4), batching="vmap", chunk_size=2)
    assert loaded.average == "logits"
    assert (loaded.batching, loaded.chunk_size) == ("vmap", 2)
    torch.testing.assert_close(loaded(x), logits(x))
    regression = SampledEnsemble(model, _posterior(model), 3, task="regression")
    reloaded = _reload(regression, nn.Linear(3, 4))
    assert reloaded.task == "regression"
    prediction = reloaded(x)
    assert isinstance(prediction, GaussianPrediction)
    torch.testing.assert_close(prediction.mean, regression(x).mean)  # type: ignore[union-attr]


def test_each_task_refuses_the_others_calls_with_what_to_use() -> None:
    model = nn.Linear(3, 4)
    x = torch.randn(2, 3)
    regression = SampledEnsemble(model, _posterior(model), 2, task="regression")
    with pytest.raises(ValueError) as logits:
        regression.sample_logits(x)
    assert str(logits.value) == (
        "this ensemble was built with task='regression': use ens(x) or sample_regression(x)"
    )
    classification = SampledEnsemble(model, _posterior(model), 2)
    with pytest.raises(ValueError) as moments:
        classification.sample_regression(x)
    assert str(moments.value) == (
        "this ensemble was built with task='classification': use ens(x), sample_probs(x) or "
        "sample_logits(x)"
    )


def test_a_single_output_classifier_is_refused_with_the_whole_text() -> None:
    model = nn.Linear(3, 1)
    ensemble = SampledEnsemble(model, _posterior(model), 2)
    with pytest.raises(ValueError) as refused:
        ensemble(torch.randn(5, 3))
    assert str(refused.value) == (
        "the model gives outputs of shape (5, 1), with no class dimension of size >= 2 at dim "
        "1: a softmax over one output is always 1. For regression build SampledEnsemble(..., "
        "task='regression'); for binary classification give the model 2 outputs"
    )


def test_a_custom_posterior_cannot_be_saved_and_the_text_says_which_can() -> None:
    class Custom:
        def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
            return {"weight": torch.zeros(2, 2)}

    ensemble = SampledEnsemble(nn.Linear(2, 2), Custom(), 2)
    with pytest.raises(TypeError) as refused:
        ensemble.state_dict()
    assert str(refused.value) == (
        "Custom has no state_dict(): only tradi's posteriors "
        "(tradi.posterior.StatefulPosterior) can be saved"
    )


# --- the 2026-11-30 run's survivors (ensemble.py after the BatchNorm split) ---------------------


class Tied(nn.Module):
    """One weight used by two layers (registered under both names)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 3)
        self.second.weight = self.first.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.second(torch.relu(self.first(x)))


def test_a_tied_weight_takes_its_sampled_value_in_every_layer() -> None:
    """A zero-variance posterior at twice the weights: both layers use the doubled weight."""
    torch.manual_seed(0)
    model, x = Tied().eval(), torch.randn(4, 3)
    mean = {n: 2 * p.detach() for n, p in model.named_parameters()}
    posterior = DiagonalGaussian(mean, {n: torch.zeros_like(m) for n, m in mean.items()})
    w, b1, b2 = mean["first.weight"], mean["first.bias"], mean["second.bias"]
    expected = torch.relu(x @ w.T + b1) @ w.T + b2
    logits = SampledEnsemble(model, posterior, 2, batching="loop").sample_logits(x)
    torch.testing.assert_close(logits, expected.expand(2, 4, 3))


def test_the_documented_defaults() -> None:
    model = nn.Linear(3, 4)
    ensemble = SampledEnsemble(model, _posterior(model))
    assert (ensemble.n_samples, ensemble.seed, ensemble.chunk_size) == (20, 0, 8)
    assert ensemble.cache is True
    seeded = SampledEnsemble(model, _posterior(model), 20, seed=0)
    x = torch.randn(2, 3)
    assert torch.equal(ensemble.sample_logits(x), seeded.sample_logits(x))


def test_one_bn_batch_is_accepted_and_a_bad_task_refused_with_the_exact_text() -> None:
    model = NotVmappable().eval()
    ensemble = SampledEnsemble(model, _posterior(model), 2, bn_loader=_batches(3), bn_batches=1)
    assert ensemble._sets.stacked_buffers is not None
    assert ensemble._sets.stacked_buffers["bn.num_batches_tracked"].tolist() == [1, 1]
    with pytest.raises(ValueError) as refused:
        SampledEnsemble(model, _posterior(model), 2, task="segmentation")  # type: ignore[arg-type]
    assert str(refused.value) == (
        "task must be 'classification' or 'regression', got 'segmentation'"
    )


def test_a_posterior_naming_no_model_parameter_is_refused_with_the_exact_text() -> None:
    class Stranger:
        def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
            return {"weight": torch.zeros(2, 2), "other.bias": torch.zeros(2)}

    with pytest.raises(KeyError) as refused:
        SampledEnsemble(nn.Linear(2, 2), Stranger(), 2)
    assert refused.value.args[0] == (
        "posterior returned names that are not model parameters: ['other.bias']; parameters are "
        "named as named_parameters() names them on the model without its wrappers, tied "
        "tensors once under their first name (tradi.plumbing.structure)"
    )


def test_a_float64_posterior_is_sampled_in_the_models_dtype() -> None:
    model = nn.Linear(3, 4)
    mean = {n: p.detach().double() for n, p in model.named_parameters()}
    posterior = DiagonalGaussian(mean, {n: torch.full_like(m, 0.01) for n, m in mean.items()})
    ensemble = SampledEnsemble(model, posterior, 2)
    assert ensemble._sets.stacked is not None
    assert {t.dtype for t in ensemble._sets.stacked.values()} == {torch.float32}


def test_the_loop_with_per_sample_bn_statistics_equals_vmap() -> None:
    torch.manual_seed(0)
    model = SkipFromInput().eval()
    options = {"bn_loader": _batches(4), "seed": 1}
    loop = SampledEnsemble(model, _posterior(model), 3, batching="loop", **options)
    vmapped = SampledEnsemble(model, _posterior(model), 3, batching="vmap", **options)
    x = torch.randn(5, 4)
    torch.testing.assert_close(loop.sample_logits(x), vmapped.sample_logits(x))


def test_auto_falls_back_to_the_loop_and_logs_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on an accelerator, where batching="auto" tries vmap first."""
    monkeypatch.setattr("tradi.inference.ensemble._prefers_loop", lambda device: False)
    torch.manual_seed(0)
    model = NotVmappable().eval()
    ensemble = SampledEnsemble(model, _posterior(model), 2)
    with caplog.at_level(logging.INFO, logger="tradi.inference.ensemble"):
        ensemble(torch.randn(5, 3))
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("SampledEnsemble: vmap failed (") and ".item()" in message
    assert message.endswith("); evaluating samples in a loop")
    assert ensemble.batching_used == "loop"


def test_bn_re_estimation_under_vmap_takes_chunk_size_sets_at_a_time() -> None:
    """4 sets, chunks of 2, one batch: the BatchNorm layer runs twice (once per vmapped call)."""
    torch.manual_seed(0)
    model = SkipFromInput().eval()
    calls: list[int] = []
    model.bn.register_forward_hook(lambda *args: calls.append(1))  # kept by the ensemble's copy
    SampledEnsemble(
        model, _posterior(model), 4, bn_loader=_batches(4)[:1], batching="vmap", chunk_size=2
    )
    assert len(calls) == 2
