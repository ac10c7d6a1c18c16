"""What `fit_ensemble` and `evaluate` tell a user who would otherwise get a silently useless
result: a model that is not the tracked one, a scale decided by the end of the search range, and
a single network's constant mutual information."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import tradi


def _trained(steps: int, lr: float = 0.05) -> tuple[nn.Module, tradi.WeightTracker, list]:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = list(zip(x.split(32), y.split(32), strict=True))
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tracker = tradi.WeightTracker(model, memory=8)
    for step in range(steps):
        inputs, targets = data[step % len(data)]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        tracker.update()
    return model, tracker, data


def test_a_model_other_than_the_tracked_one_is_named() -> None:
    model, tracker, _ = _trained(40)
    restored = copy.deepcopy(model)
    with torch.no_grad():
        restored[0].weight.add_(0.5)  # e.g. an earlier checkpoint loaded after training
    with pytest.warns(RuntimeWarning, match="'0.weight' differs from the tracker's mean"):
        tradi.fit_ensemble(restored, tracker, scale=1.0, n_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tradi.fit_ensemble(model, tracker, scale=1.0, n_samples=2)  # the tracked model: silent


def test_a_model_of_another_architecture_is_refused_by_parameter_name() -> None:
    _, tracker, _ = _trained(1)
    wider = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    with pytest.raises(
        ValueError, match=r"'0.weight' has shape \(32, 4\), the tracker's \(16, 4\)"
    ):
        tradi.fit_ensemble(wider, tracker, scale=1.0, n_samples=2)


def test_a_scale_decided_by_the_range_end_is_named() -> None:
    model, tracker, data = _trained(40, lr=0.0)  # no step: zero tracked variance
    with pytest.warns(RuntimeWarning, match="end of the search range"):
        _, search = tradi.fit_ensemble(model, tracker, data, n_samples=2)
    assert search is not None and search.note and search.scale == 1000.0


def test_a_single_network_has_no_mutual_information_ood_figures() -> None:
    model, _, data = _trained(40)
    ood = [(x + 5.0, y) for x, y in data]
    result = tradi.evaluate(lambda x: model(x).softmax(1), data, ood)
    assert result.ood is not None
    assert set(result.ood) == {"msp", "entropy"}
    assert torch.equal(result.scores_in["mutual_information"], torch.zeros(256))
