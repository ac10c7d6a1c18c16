"""The user's model comes out of `fit_ensemble` and `SampledEnsemble` as it went in (issue 20).

The docs promise the model is never modified: every submodule keeps its own ``training`` flag
(a model in train mode, and a mixed one with some submodules in eval mode), and every parameter
and buffer (BatchNorm running statistics, ``num_batches_tracked``) stays bit-identical, while
the predictions made on the way are deterministic (dropout off).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import tradi
from tradi.inference.batchnorm import update_bn_stats
from tradi.plumbing.modes import eval_mode, preserved_modes
from tradi.selection.search import network_predict


def _network() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(4, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 3),
    )


def _trained(mixed: bool) -> tuple[nn.Module, tradi.WeightTracker, list[tuple[Tensor, Tensor]]]:
    """A network trained 30 steps with a tracker, then left in train mode; ``mixed``: its first
    BatchNorm and second Dropout in eval mode (e.g. a frozen BatchNorm)."""
    torch.manual_seed(0)
    x = torch.randn(192, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = list(zip(x.split(32), y.split(32), strict=True))
    model = _network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = tradi.WeightTracker(model, memory=8)
    for step in range(30):
        inputs, targets = data[step % len(data)]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        tracker.update()
    model.train()
    if mixed:
        model[1].eval()
        model[7].eval()
    return model, tracker, data


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _assert_untouched(model: nn.Module, modes: dict[str, bool], state: dict[str, Tensor]) -> None:
    assert _modes(model) == modes
    now = model.state_dict()
    assert now.keys() == state.keys()
    for name, before in state.items():  # parameters and buffers, num_batches_tracked included
        assert now[name].dtype == before.dtype and torch.equal(now[name], before), name


@pytest.mark.parametrize("mixed", [False, True], ids=["train-mode", "mixed-modes"])
def test_fit_ensemble_with_a_search_and_bn_re_estimation_leaves_the_model_as_it_was(
    mixed: bool,
) -> None:
    model, tracker, data = _trained(mixed)
    modes, state = _modes(model), _state(model)
    assert model[1].num_batches_tracked.item() == 30  # statistics that a pass would change
    ensemble, search = tradi.fit_ensemble(
        model, tracker, data[:2], bn_loader=data, n_samples=3, bn_batches=2
    )
    assert search is not None and len(search.points) >= 2
    _assert_untouched(model, modes, state)
    first, second = ensemble(data[0][0]), ensemble(data[0][0])
    assert torch.equal(first, second)
    _assert_untouched(model, modes, state)


@pytest.mark.parametrize("mixed", [False, True], ids=["train-mode", "mixed-modes"])
def test_fit_ensemble_at_a_fixed_scale_leaves_the_model_as_it_was(mixed: bool) -> None:
    model, tracker, data = _trained(mixed)
    modes, state = _modes(model), _state(model)
    ensemble, search = tradi.fit_ensemble(model, tracker, scale=0.5, bn_loader=data, n_samples=3)
    assert search is None
    assert torch.equal(ensemble(data[1][0]), ensemble(data[1][0]))
    _assert_untouched(model, modes, state)


@pytest.mark.parametrize("mixed", [False, True], ids=["train-mode", "mixed-modes"])
def test_a_sampled_ensemble_built_used_and_reloaded_leaves_the_model_as_it_was(
    mixed: bool,
) -> None:
    model, tracker, data = _trained(mixed)
    modes, state = _modes(model), _state(model)
    for batching in ("loop", "vmap"):
        ens = tradi.SampledEnsemble(
            model, tracker.posterior("diag"), 3, bn_loader=data, batching=batching
        )
        probs = ens.predict(data[:2])
        assert torch.equal(probs, ens.predict(data[:2]))
        again = tradi.SampledEnsemble.from_state_dict(model, ens.state_dict(), batching=batching)
        assert torch.equal(again.predict(data[:2]), probs)
        _assert_untouched(model, modes, state)


@pytest.mark.parametrize("mixed", [False, True], ids=["train-mode", "mixed-modes"])
def test_the_network_reference_of_the_search_predicts_in_eval_mode_and_restores_modes(
    mixed: bool,
) -> None:
    model, _, data = _trained(mixed)
    modes, state = _modes(model), _state(model)
    predict = network_predict(model)
    first, second = predict(data[0][0]), predict(data[0][0])
    assert torch.equal(first, second)  # dropout off, BatchNorm on its running statistics
    reference = _network()
    reference.load_state_dict(state)
    with torch.no_grad():
        expected = reference.eval()(data[0][0]).softmax(dim=1)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    _assert_untouched(model, modes, state)


def test_modes_are_restored_after_an_exception_and_for_shared_submodules() -> None:
    shared = nn.Dropout(0.5)
    model = nn.Sequential(nn.Linear(2, 2), shared, nn.Sequential(shared, nn.BatchNorm1d(2)))
    model.train()
    model[2][1].eval()
    modes = _modes(model)
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert _modes(model) == modes
    with preserved_modes(model) as same:
        assert same is model
        model.train()
    assert _modes(model) == modes


def test_update_bn_stats_restores_each_submodules_mode() -> None:
    model, _, data = _trained(mixed=True)
    modes = _modes(model)
    update_bn_stats(model, data)
    assert _modes(model) == modes
    assert model[1].num_batches_tracked.item() == len(data)  # re-estimated, as documented
