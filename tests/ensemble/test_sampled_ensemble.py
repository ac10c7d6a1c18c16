"""SampledEnsemble: averaging rule, BatchNorm re-estimation, and the user's model left untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from tradi import DiagonalGaussian, SampledEnsemble, WeightTracker


def trained_net() -> tuple[nn.Module, WeightTracker, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 4)
    )
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(16, 5, generator=g), torch.randint(0, 4, (16,), generator=g))
        for _ in range(20)
    ]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = WeightTracker(model)
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        tracker.update()
    return model, tracker, data


def test_prediction_is_the_mean_of_per_sample_softmax() -> None:
    model, tracker, data = trained_net()
    x = data[0][0]
    ens = SampledEnsemble(model, tracker.posterior("kernel", scale=50.0), n_samples=6, seed=3)
    per_sample = ens.sample_probs(x)
    assert per_sample.shape == (6, 16, 4)
    torch.testing.assert_close(per_sample.sum(-1), torch.ones(6, 16))
    torch.testing.assert_close(ens(x), per_sample.mean(0))
    assert not torch.allclose(per_sample[0], per_sample[1])  # the samples differ
    by_logits = SampledEnsemble(model, ens.posterior, n_samples=6, seed=3, average="logits")
    torch.testing.assert_close(by_logits(x), by_logits.sample_logits(x).mean(0).softmax(-1))
    # the same seed gives the same ensemble, cached or redrawn per batch
    again = SampledEnsemble(model, ens.posterior, n_samples=6, seed=3, cache=False)
    torch.testing.assert_close(again(x), ens(x), rtol=0, atol=0)


def test_zero_scale_reproduces_the_deterministic_network() -> None:
    model, tracker, data = trained_net()
    x = data[1][0]
    posterior = DiagonalGaussian(tracker.weights(), tracker.variance(), scale=0.0)
    ens = SampledEnsemble(model, posterior, n_samples=3)
    model.eval()
    torch.testing.assert_close(ens(x), model(x).softmax(-1))


def test_user_model_is_never_mutated_even_with_bn_update() -> None:
    model, tracker, data = trained_net()
    model.train()
    before = copy.deepcopy(model.state_dict())
    ens = SampledEnsemble(model, tracker.posterior("diag", scale=10.0), 4, bn_loader=data)
    ens(data[0][0])
    ens.predict(data[:2])
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_per_sample_bn_statistics_equal_swa_utils_update_bn() -> None:
    model, tracker, data = trained_net()
    posterior = tracker.posterior("diag", scale=30.0)
    ens = SampledEnsemble(model, posterior, 3, bn_loader=data, seed=1)
    for index, weights in enumerate(ens._sets):
        reference = copy.deepcopy(model)
        reference.load_state_dict({**reference.state_dict(), **weights})
        update_bn(data, reference)  # PyTorch's own implementation, on a loaded copy
        reference.eval()
        x = data[2][0]
        torch.testing.assert_close(ens.sample_probs(x)[index], reference(x).softmax(-1))
        torch.testing.assert_close(
            ens._sets.buffers[index]["1.running_var"], reference[1].running_var
        )


def test_predict_concatenates_batches_and_validates_arguments() -> None:
    model, tracker, data = trained_net()
    ens = SampledEnsemble(model, tracker.posterior("diag", scale=20.0), 2, seed=4)
    predicted = ens.predict(data[:3])
    assert predicted.shape == (2, 48, 4)
    inputs = torch.cat([x for x, _ in data[:3]])
    for index, weights in enumerate(ens._sets):
        network = copy.deepcopy(model)
        network.load_state_dict({**network.state_dict(), **weights})
        with torch.no_grad():
            expected = network.eval()(inputs).softmax(-1)
        torch.testing.assert_close(predicted[index], expected)  # batches in order, per sample
    assert not torch.allclose(predicted[0], predicted[1])
    with pytest.raises(ValueError, match="n_samples"):
        SampledEnsemble(model, tracker.posterior(), 0)
    with pytest.raises(ValueError, match="average"):
        SampledEnsemble(model, tracker.posterior(), 2, average="median")  # type: ignore[arg-type]
