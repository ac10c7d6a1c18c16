"""TRADI as a method: tracking rides along the same loop without changing training, the
posterior comes from the tracker, zero scale predicts with the tracked mean."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from tradi.methods import build_method
from tradi.tracking import WeightTracker

TRAIN = {"epochs": 3, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 3}


def test_tracking_is_passive_and_updates_after_every_step(
    model_factory, train_loader, val_loader
) -> None:
    tradi = build_method("tradi", model_factory, train=TRAIN, start_epoch=1, n_samples=2)
    tradi.fit(train_loader, val_loader)
    plain = build_method("mcp", model_factory, train=TRAIN)
    plain.fit(train_loader, val_loader)
    assert tradi.model is not None and plain.model is not None and tradi.tracker is not None
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, tradi.model.state_dict()[name])  # same training, bit for bit
    assert tradi.tracker.num_updates == 2 * len(train_loader)  # epochs 1 and 2 only

    # the same tracker run by hand over an identical training reproduces the method's state
    torch.manual_seed(3)
    model = model_factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_loader.generator.manual_seed(3)
    tracker = None
    for epoch in range(3):
        if epoch == 1:
            tracker = WeightTracker(model, init_mean="weights", init_variance=0.0)
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if tracker is not None:
                tracker.update()
        for _ in val_loader:  # validation draws a loader seed from the global random state
            pass
    assert tracker is not None
    for name, variance in tracker.variance().items():
        assert torch.equal(variance, tradi.tracker.variance()[name])
        assert torch.equal(tracker.mean()[name], tradi.tracker.mean()[name])


def test_zero_scale_predicts_with_the_tracked_mean(model_factory, train_loader, val_loader) -> None:
    for covariance in ("diag", "kernel"):
        tradi = build_method(
            "tradi",
            model_factory,
            train=TRAIN,
            covariance=covariance,
            scale=0.0,
            bn_update=False,
            n_samples=3,
        )
        tradi.fit(train_loader)
        assert tradi.model is not None and tradi.tracker is not None
        x = next(iter(val_loader))[0]
        with torch.no_grad():
            expected = functional_call(tradi.model.eval(), tradi.tracker.mean(), (x,)).softmax(-1)
        for sample in tradi.sample_probs(x):
            torch.testing.assert_close(sample, expected)


def test_scale_multiplies_the_sampled_deviation(model_factory, train_loader) -> None:
    tradi = build_method("tradi", model_factory, train=TRAIN, covariance="diag", scale=5.0)
    tradi.fit(train_loader)
    assert tradi.tracker is not None
    posterior = tradi._posterior(5.0)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([posterior.sample(g)["0.weight"] for _ in range(4000)])
    expected = 5.0 * tradi.tracker.variance()["0.weight"].sqrt()
    torch.testing.assert_close(draws.std(0), expected, rtol=0.08, atol=1e-7)


def test_scale_left_to_validation_is_chosen_there(model_factory, train_loader, val_loader) -> None:
    tradi = build_method(
        "tradi", model_factory, train=TRAIN, scale=None, scale_grid=(0.0, 1.0), n_samples=2
    )
    info = tradi.fit(train_loader, val_loader)
    assert info.scale_search is not None and set(info.scale_search.scores) == {0.0, 1.0}
    scores = info.scale_search.scores
    assert tradi.noise_scale == min(scores, key=scores.get)


def test_gradient_step_form_reads_the_loop_optimizer(model_factory, train_loader) -> None:
    tradi = build_method("tradi", model_factory, train=TRAIN, step="gradient", n_samples=2)
    tradi.fit(train_loader)
    assert tradi.tracker is not None and tradi.tracker.step_form == "gradient"
    assert tradi.tracker.num_updates == 3 * len(train_loader)
    with pytest.raises(ValueError, match="nothing would be tracked"):
        build_method("tradi", model_factory, train=TRAIN, start_epoch=3).fit(train_loader)
