"""Deep Ensembles: members from seeds seed + i through the same loop, averaged; time summed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

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


class Interrupted(Exception):
    """What the run below raises to stop a fit mid-epoch, as a crash or a ^C would."""


class CountingLoader:
    """A training loader that counts the epochs it serves and can raise mid-epoch.

    It hands the loop the wrapped DataLoader's shuffling generator (``generator``/``sampler``),
    so checkpoints save and restore it as they would the DataLoader's own.
    """

    def __init__(self, loader: DataLoader, *, fail_at_batch: int | None = None) -> None:
        self.loader, self.fail_at_batch = loader, fail_at_batch
        self.generator, self.sampler = loader.generator, loader.sampler
        self.epochs_started, self.batches = 0, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.epochs_started += 1
        for batch in self.loader:
            self.batches += 1
            if self.batches == self.fail_at_batch:
                raise Interrupted(f"stopped at batch {self.batches}")
            yield batch


def test_an_interrupted_ensemble_resumes_per_member(model_factory, make_loader, tmp_path) -> None:
    train = {**TRAIN, "epochs": 3}
    per_epoch = len(make_loader(192, seed=1, shuffle=True))  # 6 batches
    reference = build_method("deep_ensembles", model_factory, train=train, n_members=2)
    reference.fit(
        CountingLoader(make_loader(192, seed=1, shuffle=True)), checkpoint_dir=tmp_path / "a"
    )

    # crash in the middle of member 1's second epoch: member 0 and member 1's first epoch are saved
    crashing = CountingLoader(
        make_loader(192, seed=1, shuffle=True), fail_at_batch=4 * per_epoch + 3
    )
    with pytest.raises(Interrupted):
        build_method("deep_ensembles", model_factory, train=train, n_members=2).fit(
            crashing, checkpoint_dir=tmp_path / "b"
        )
    assert crashing.epochs_started == 5

    # a new process: other global random state; the checkpoints restore everything that matters
    torch.manual_seed(999)
    counting = CountingLoader(make_loader(192, seed=1, shuffle=True))
    resumed = build_method("deep_ensembles", model_factory, train=train, n_members=2)
    info = resumed.fit(counting, checkpoint_dir=tmp_path / "b")
    assert counting.epochs_started == 2  # member 1's epochs 1 and 2; nothing of member 0
    assert counting.batches == 2 * per_epoch
    for mine, theirs in zip(resumed.members, reference.members, strict=True):
        for name, tensor in theirs.state_dict().items():
            assert torch.equal(tensor, mine.state_dict()[name]), name
    assert [run.epochs for run in info.runs] == [3, 3]
    reference_info = reference.fit_info
    assert reference_info is not None
    assert [run.history for run in info.runs] == [run.history for run in reference_info.runs]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["member_0", "member_1"]
