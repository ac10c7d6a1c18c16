"""Deep Ensembles: members from seeds seed + i through the same loop, averaged; time summed."""

from __future__ import annotations

import pytest
import torch

from tradi.methods import build_method

TRAIN = {"epochs": 2, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 11}


def test_members_differ_and_the_prediction_is_their_average(
    model_factory, train_loader, val_loader
) -> None:
    ensemble = build_method("deep_ensembles", model_factory, train=TRAIN, n_members=3)
    info = ensemble.fit(train_loader, val_loader)
    assert len(ensemble.members) == 3 and len(info.runs) == 3
    assert info.train_seconds == pytest.approx(sum(r.train_seconds for r in info.runs))
    first = dict(ensemble.members[0].named_parameters())
    for member in ensemble.members[1:]:
        for name, param in member.named_parameters():
            assert not torch.equal(param, first[name])

    x = next(iter(val_loader))[0]
    with torch.no_grad():
        by_hand = torch.stack([m.eval()(x).softmax(-1) for m in ensemble.members]).mean(0)
    torch.testing.assert_close(ensemble.predict_mean(x), by_hand)
    torch.testing.assert_close(ensemble.predict(val_loader)[:, :32].mean(0), by_hand)


def test_member_i_is_the_single_network_trained_from_seed_plus_i(
    model_factory, train_loader
) -> None:
    ensemble = build_method("deep_ensembles", model_factory, train=TRAIN, n_members=2)
    ensemble.fit(train_loader)
    for index, member in enumerate(ensemble.members):
        single = build_method("mcp", model_factory, train={**TRAIN, "seed": 11 + index})
        single.fit(train_loader)
        assert single.model is not None
        for name, tensor in single.model.state_dict().items():
            assert torch.equal(tensor, member.state_dict()[name]), (index, name)


def test_an_interrupted_ensemble_resumes_per_member(model_factory, make_loader, tmp_path) -> None:
    reference = build_method("deep_ensembles", model_factory, train=TRAIN, n_members=2)
    reference.fit(make_loader(192, seed=1, shuffle=True), checkpoint_dir=tmp_path / "a")
    resumed = build_method("deep_ensembles", model_factory, train=TRAIN, n_members=2)
    resumed.fit(make_loader(192, seed=1, shuffle=True), checkpoint_dir=tmp_path / "b")
    # a second fit in the same directory restores every finished member instead of retraining
    again = build_method("deep_ensembles", model_factory, train=TRAIN, n_members=2)
    info = again.fit(make_loader(192, seed=1, shuffle=True), checkpoint_dir=tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["member_0", "member_1"]
    for mine, theirs in zip(again.members, reference.members, strict=True):
        for name, tensor in theirs.state_dict().items():
            assert torch.equal(tensor, mine.state_dict()[name])
    assert info.runs[0].history == resumed.fit_info.runs[0].history  # type: ignore[union-attr]
