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
from tradi.regression import GaussianPrediction


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
    with caplog.at_level(logging.INFO, logger="tradi.ensemble"):
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
