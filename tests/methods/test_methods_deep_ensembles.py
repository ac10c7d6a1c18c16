"""Deep Ensembles: member m from seed s + m * 10**6 through the same loop, averaged; time summed.

Member seeds of different experiment seeds never coincide (issue 19): with the old seeds
s, s + 1, ... the ensembles of seeds 0 and 1 shared networks and the spread over seeds shrank.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from tradi.methods import build_method
from tradi.methods.deep_ensembles import MAX_MEMBERS, SEED_MARKER, member_seed

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


def test_member_seeds_of_ten_seeds_are_pairwise_disjoint_and_miss_every_experiment_seed() -> None:
    seeds = range(10)
    members = {s: [member_seed(s, m) for m in range(5)] for s in seeds}
    assert all(members[s][0] == s for s in seeds)  # member 0: the seed's own (shared) run
    others = [seed for s in seeds for seed in members[s][1:]]
    assert len(set(others)) == len(others) == 10 * 4
    assert not set(others) & set(seeds)
    assert member_seed(7, 3) == 3_000_007
    # the extremes stay below 2**32: torch's CPU generator uses a seed's low 32 bits alone
    assert member_seed(999_999, MAX_MEMBERS - 1) == 4_293_999_999 < 2**32


def test_torch_ignores_a_seed_above_its_low_32_bits_which_is_why_member_seeds_stay_below() -> None:
    """Had the members trained from s + m * 2**32 they would all be one network (they did)."""
    torch.manual_seed(3)
    low = torch.rand(3)
    torch.manual_seed(3 + 2**32)
    torch.testing.assert_close(torch.rand(3), low, rtol=0, atol=0)


@pytest.mark.parametrize(("seed", "member"), [(-1, 1), (1_000_000, 1), (0, -1), (0, MAX_MEMBERS)])
def test_a_seed_or_member_outside_the_scheme_is_refused(seed: int, member: int) -> None:
    with pytest.raises(ValueError, match=r"seed=|member index"):
        member_seed(seed, member)


def test_an_ensemble_with_an_experiment_seed_outside_the_scheme_is_refused_when_built(
    model_factory,
) -> None:
    with pytest.raises(ValueError, match=r"seed in \[0, 1_000_000\).*seed=1000000"):
        build_method("deep_ensembles", model_factory, train={**TRAIN, "seed": 1_000_000})
    with pytest.raises(ValueError, match="n_members must lie in"):
        build_method("deep_ensembles", model_factory, train=TRAIN, n_members=MAX_MEMBERS + 1)


def test_member_m_is_the_single_network_trained_from_its_member_seed(
    model_factory, train_loader
) -> None:
    ensemble = build_method("deep_ensembles", model_factory, train=TRAIN, n_members=2)
    ensemble.fit(train_loader)
    assert ensemble.member_seeds == [11, 1_000_011]
    for index, member in enumerate(ensemble.members):
        single = build_method("mcp", model_factory, train={**TRAIN, "seed": 11 + index * 10**6})
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


def test_the_ensembles_of_two_experiment_seeds_share_no_network(model_factory, make_loader) -> None:
    """The old seeds s, s + 1, ... made member 1 of seed 0 the very network of seed 1's member 0."""
    members = []
    for seed in (0, 1):
        train = {**TRAIN, "epochs": 1, "seed": seed}
        ensemble = build_method("deep_ensembles", model_factory, train=train, n_members=3)
        ensemble.fit(make_loader(96, seed=1, shuffle=True))
        members += [(seed, m, net.state_dict()) for m, net in enumerate(ensemble.members)]
    for (s, m, one), (t, n, other) in itertools.combinations(members, 2):
        assert any(not torch.equal(one[k], other[k]) for k in one), (s, m, t, n)


def test_a_member_folder_of_the_old_seed_scheme_is_trained_afresh(
    model_factory, make_loader, tmp_path, caplog
) -> None:
    """A ``member_1/`` written before the marker (seed s + 1) is not resumed: it is removed and
    member 1 trains from its own seed, equal to an uninterrupted fit."""
    train = {**TRAIN, "epochs": 2}
    reference = build_method("deep_ensembles", model_factory, train=train, n_members=2)
    reference.fit(make_loader(96, seed=1, shuffle=True), checkpoint_dir=tmp_path / "new")
    old = tmp_path / "old"
    stale = build_method("mcp", model_factory, train={**train, "seed": 12})  # old member 1
    stale.fit(make_loader(96, seed=1, shuffle=True), checkpoint_dir=old / "member_1")
    assert (old / "member_1" / "checkpoint.pt").exists()
    assert not (old / "member_1" / SEED_MARKER).exists()

    resumed = build_method("deep_ensembles", model_factory, train=train, n_members=2)
    counting = CountingLoader(make_loader(96, seed=1, shuffle=True))
    with caplog.at_level(logging.WARNING, logger="tradi"):
        resumed.fit(counting, checkpoint_dir=old)
    assert counting.epochs_started == 2 * 2  # member 0 and member 1, both from scratch
    assert any("trained from seed 12, not 1000011" in r.getMessage() for r in caplog.records)
    for mine, theirs in zip(resumed.members, reference.members, strict=True):
        for name, tensor in theirs.state_dict().items():
            assert torch.equal(tensor, mine.state_dict()[name]), name


def test_the_saved_state_records_the_member_seeds_and_an_old_state_loads_with_a_warning(
    model_factory, train_loader, val_loader
) -> None:
    train = {**TRAIN, "epochs": 1, "seed": 3}
    ensemble = build_method("deep_ensembles", model_factory, train=train, n_members=2)
    ensemble.fit(train_loader)
    state = ensemble.state_dict()
    assert state["member_seeds"] == [3, 1_000_003] and state["seed_scheme"] == 2
    x = next(iter(val_loader))[0]

    loaded = build_method("deep_ensembles", model_factory, train=train, n_members=2)
    loaded.load_state_dict(state)
    assert loaded.member_seeds == [3, 1_000_003]
    torch.testing.assert_close(loaded.predict_mean(x), ensemble.predict_mean(x))

    old = {"members": state["members"]}  # as saved before the seeds were recorded
    with pytest.warns(UserWarning, match=r"seeds s, s \+ 1"):
        loaded.load_state_dict(old)
    assert loaded.member_seeds is None
    torch.testing.assert_close(loaded.predict_mean(x), ensemble.predict_mean(x))
