"""A saved SampledEnsemble reloads under weights_only=True and predicts identically, without the
training data its BatchNorm statistics came from."""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor, nn

from tradi import SampledEnsemble, WeightTracker
from tradi.models import build_model


def _reload(ensemble: SampledEnsemble, model: nn.Module, **options: object) -> SampledEnsemble:
    buffer = io.BytesIO()
    torch.save(ensemble.state_dict(), buffer)
    buffer.seek(0)
    return SampledEnsemble.from_state_dict(model, torch.load(buffer, weights_only=True), **options)


@pytest.mark.parametrize("sample_modules", [None, ["layers.8"]])
def test_round_trip_predicts_identically(sample_modules: list[str] | None) -> None:
    torch.manual_seed(0)
    trained = build_model("mlp", 10, (1, 8, 8), hidden_features=[12, 12]).eval()
    posterior = WeightTracker(trained, init_mean="weights", init_variance=0.01).posterior(
        "kernel", rank=3
    )
    bn_loader = [(torch.randn(16, 1, 8, 8),) for _ in range(3)]
    ensemble = SampledEnsemble(
        trained, posterior, 5, bn_loader=bn_loader, seed=7, sample_modules=sample_modules
    )
    fresh = build_model("mlp", 10, (1, 8, 8), hidden_features=[12, 12])  # untrained weights
    loaded = _reload(ensemble, fresh)
    x = torch.randn(9, 1, 8, 8)
    assert torch.equal(loaded.sample_logits(x), ensemble.sample_logits(x))
    assert loaded.sample_modules == ensemble.sample_modules
    redrawn = _reload(ensemble, fresh, cache=False, batching="vmap")
    torch.testing.assert_close(redrawn(x), ensemble(x))


def test_a_custom_posterior_cannot_be_saved() -> None:
    class Custom:
        def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
            return {"weight": torch.zeros(2, 2)}

    ensemble = SampledEnsemble(nn.Linear(2, 2), Custom(), 2)
    with pytest.raises(TypeError, match="Custom has no state_dict"):
        ensemble.state_dict()
