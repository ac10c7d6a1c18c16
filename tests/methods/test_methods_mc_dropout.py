"""MC Dropout: only dropout is stochastic at test time; BatchNorm is frozen in eval mode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tradi.methods import build_method

TRAIN = {"epochs": 2, "optimizer": "adam", "lr": 1e-2, "progress": False}


def test_passes_differ_and_batchnorm_statistics_never_change(
    model_factory, train_loader, val_loader
) -> None:
    method = build_method("mc_dropout", model_factory, train=TRAIN, n_passes=5)
    method.fit(train_loader)
    model = method.model
    assert model is not None
    buffers = copy.deepcopy(dict(model.named_buffers()))
    probs = method.predict(val_loader)
    for name, before in buffers.items():
        assert torch.equal(before, dict(model.named_buffers())[name]), name
    assert probs.shape == (5, 96, 3)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.allclose(probs[i], probs[j])
    assert not model.training and not any(m.training for m in model.modules())
    # reproducible, and the caller's random stream moves only as iterating the loader moves it
    state = torch.get_rng_state()
    torch.testing.assert_close(method.predict(val_loader), probs, rtol=0, atol=0)
    after_predict = torch.get_rng_state()
    torch.set_rng_state(state)
    for _ in val_loader:
        pass
    assert torch.equal(torch.get_rng_state(), after_predict)


def test_each_pass_is_the_eval_network_with_one_dropout_mask(
    model_factory, train_loader, val_loader
) -> None:
    """Re-computing one pass by hand: BatchNorm uses running statistics, dropout draws a mask."""
    method = build_method("mc_dropout", model_factory, train=TRAIN, n_passes=1)
    method.fit(train_loader)
    model = method.model
    assert isinstance(model, nn.Sequential)
    x = next(iter(val_loader))[0]
    torch.manual_seed(7)
    probs = method.sample_probs(x)[0]
    torch.manual_seed(7)
    with torch.no_grad():
        hidden = model[2](model[1].eval()(model[0](x)))  # Linear, BN in eval mode, ReLU
        hidden = nn.functional.dropout(hidden, p=0.2, training=True)
        expected = model[4](hidden).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_a_model_without_dropout_is_rejected(train_loader) -> None:
    method = build_method("mc_dropout", lambda: nn.Linear(4, 3), train=TRAIN)
    with pytest.raises(ValueError, match="dropout layers"):
        method.fit(train_loader)


def test_zero_dropout_reproduces_the_deterministic_network(
    mlp_with_dropout, train_loader, val_loader
) -> None:
    method = build_method("mc_dropout", mlp_with_dropout(0.0), train=TRAIN, n_passes=3)
    method.fit(train_loader)
    single = build_method("mcp", mlp_with_dropout(0.0), train=TRAIN)
    single.fit(train_loader)
    expected = single.predict(val_loader)[0]
    for sample in method.predict(val_loader):
        torch.testing.assert_close(sample, expected, rtol=0, atol=0)
