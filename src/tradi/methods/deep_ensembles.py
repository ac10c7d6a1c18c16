"""Deep Ensembles (Lakshminarayanan et al., 2017): M networks from different seeds, averaged."""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tradi.distributed import barrier, is_rank_zero
from tradi.methods.base import FitInfo, Method
from tradi.plumbing.structure import unwrap
from tradi.training import Callback, FitResult
from tradi.training.checkpoint import load_checkpoint, save_atomic

logger = logging.getLogger(__name__)

#: Member m of experiment seed s trains from ``s + m * SEED_STRIDE`` (see `member_seed`): a
#: power of ten, so both can be read off the decimal seed (seed 3, member 2: 2000003).
SEED_STRIDE = 1_000_000
#: Torch's CPU generator (mt19937) keeps only the low 32 bits of a seed (seeds s and s + 2**32
#: give the same numbers; tested), so every member seed must stay below 2**32.
SEED_LIMIT = 2**32
#: The most members a seed's ensemble may have: member index MAX_MEMBERS - 1 = 4293 keeps
#: ``s + m * SEED_STRIDE`` below SEED_LIMIT for every s < SEED_STRIDE.
MAX_MEMBERS = SEED_LIMIT // SEED_STRIDE
#: The member-seed scheme in the saved state: 1 (tradi before issue 19, no marker) used
#: s, s + 1, ..., so the ensembles of neighbouring experiment seeds shared networks; 2 is
#: `member_seed`'s.
SEED_SCHEME = 2
#: The file in each ``member_<m>/`` checkpoint folder that names the seed it trains from.
SEED_MARKER = "member_seed.pt"


def member_seed(seed: int, member: int) -> int:
    """The seed member ``member`` (0-based) of the ensemble of experiment seed ``seed`` trains
    from: ``seed + member * 1_000_000``, so member 0 is the seed's ordinary run.

    No collision, for any number of members and any set of experiment seeds in range:
    ``seed`` and ``member`` are the two base-1_000_000 digits of the result, so distinct
    (seed, member) pairs give distinct seeds, and every member m >= 1 gets a seed >= 1_000_000,
    above every experiment seed. The result stays below 2**32, the part of a seed that torch's
    CPU generator uses.

    Raises:
        ValueError: ``seed`` outside [0, 1_000_000) or ``member`` outside [0, 4294).
    """
    if not 0 <= seed < SEED_STRIDE:
        raise ValueError(
            f"Deep Ensembles needs a seed in [0, 1_000_000) (member m trains from "
            f"seed + m * 1_000_000, which must stay distinct from every other seed's), got "
            f"seed={seed}; choose a seed in that range"
        )
    if not 0 <= member < MAX_MEMBERS:
        raise ValueError(f"member index must lie in [0, {MAX_MEMBERS}), got {member}")
    return seed + member * SEED_STRIDE


@dataclass(frozen=True)
class DeepEnsemblesOptions:
    """``n_members``: networks trained one after another, member m from `member_seed` (seed, m)."""

    n_members: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.n_members <= MAX_MEMBERS:
            raise ValueError(f"n_members must lie in [1, {MAX_MEMBERS}], got {self.n_members}")


class DeepEnsembles(Method):
    """M members, each built and trained through the shared loop from its own seed.

    Member 0 is the seed's ordinary run, so the runner lets it be the run other methods share;
    member m >= 1 trains from `member_seed` (seed, m), a seed no other experiment seed's
    ensemble uses, so the ensembles of different seeds share no network. The reported training
    time is the sum of the members' (they could run in parallel, but the cost is M trainings).
    With a checkpoint directory, member m checkpoints in ``member_{m}/`` (beside a marker
    naming its seed) so an interrupted ensemble resumes where it stopped; a folder whose member
    trained from another seed (an older tradi's s + m) is trained afresh, with a warning.

    Raises:
        ValueError: at construction, ``TrainConfig.seed`` outside [0, 1_000_000).
    """

    name = "deep_ensembles"
    label = "Deep Ensembles"
    short_label = "Deep Ens."
    options_type = DeepEnsemblesOptions
    #: Results of the old seed scheme (s, s + 1, ...) are another experiment: a resumed run
    #: retrains them (`Method.version`).
    version: ClassVar[int] = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members: list[nn.Module] = []
        #: The seed of each member (`planned_member_seeds` until a state says otherwise); None
        #: after loading a state saved before the seeds were recorded (`load_state_dict`).
        self.member_seeds: list[int] | None = self.planned_member_seeds()

    def planned_member_seeds(self) -> list[int]:
        """`member_seed` (``TrainConfig.seed``, m) for m = 0..M-1; ValueError as it says."""
        return [member_seed(self.train.seed, m) for m in range(self.options.n_members)]

    def train_network(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None,
    ) -> tuple[nn.Module, FitResult]:
        """Member 0: the seed's ordinary run (the one other methods share), in ``member_0/``."""
        folder = _member_dir(checkpoint_dir, 0, self.train.seed, self.train.seed)
        return self._train_network(self.train.seed, train_loader, val_loader, callbacks, folder)

    def adopt(
        self,
        model: nn.Module,
        result: FitResult,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        *,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None,
    ) -> FitInfo:
        """Take ``model`` as member 0 and train members 1..M-1 (seeds `member_seed` (seed, m),
        checkpoints in ``checkpoint_dir/member_m``). ``train_seconds``: member 0's share of its
        run (as `Method.adopt`) plus the other members' runs."""
        first = super().adopt(model, result, train_loader, val_loader, callbacks=callbacks)
        seeds = self.planned_member_seeds()
        members, runs = [model], [result]
        for index in range(1, self.options.n_members):
            folder = _member_dir(checkpoint_dir, index, seeds[index], self.train.seed)
            member, run = self._train_network(seeds[index], train_loader, val_loader, (), folder)
            members.append(member)
            runs.append(run)
        self.members, self.member_seeds = members, seeds
        seconds = first.train_seconds + sum(run.train_seconds for run in runs[1:])
        self.fit_info = FitInfo(train_seconds=seconds, runs=runs)
        return self.fit_info

    @property
    def forward_passes_per_input(self) -> int:
        return self.options.n_members

    @torch.no_grad()
    def sample_probs(self, x: Any) -> Tensor:
        if not self.members:
            raise RuntimeError(f"{self.name}: call fit() or load_state_dict() first")
        return torch.stack([self._network_probs(member.eval(), x) for member in self.members])

    @torch.no_grad()
    def sample_logits(self, x: Any) -> Tensor:
        """The members' logits: [n_members, N, C, ...]."""
        if not self.members:
            raise RuntimeError(f"{self.name}: call fit() or load_state_dict() first")
        return torch.stack([self._network_logits(member.eval(), x) for member in self.members])

    def state_dict(self) -> dict[str, Any]:
        """The members' weights, the seeds they trained from and the scheme (`SEED_SCHEME`)."""
        return {
            "members": [unwrap(member).state_dict() for member in self.members],
            "member_seeds": self.member_seeds,
            "seed_scheme": SEED_SCHEME,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load ``state_dict``'s output. A state without ``seed_scheme`` (saved before issue 19)
        loads with a warning: its members trained from seeds s, s + 1, ..., shared with the
        ensembles of neighbouring seeds, and ``member_seeds`` becomes None.

        Raises:
            ValueError: a number of members other than ``n_members``.
        """
        if len(state["members"]) != self.options.n_members:
            raise ValueError(
                f"state has {len(state['members'])} members, options say {self.options.n_members}"
            )
        members = []
        for member_state in state["members"]:
            model = self._built_model()
            unwrap(model).load_state_dict(member_state)
            members.append(model)
        self.members = members
        if "seed_scheme" not in state:
            warnings.warn(
                "deep_ensembles: this state was saved before tradi recorded its members' seeds; "
                "its members trained from seeds s, s + 1, ..., which the ensembles of "
                "neighbouring seeds share. Retrain it for ensembles that share no network.",
                stacklevel=2,
            )
        self.member_seeds = state.get("member_seeds")


def _member_dir(
    checkpoint_dir: str | Path | None, index: int, seed: int, experiment_seed: int
) -> Path | None:
    """``checkpoint_dir/member_<index>``, made ready for a member trained from ``seed``: a
    folder whose marker names another seed is removed (with a warning), so a resumed ensemble
    never continues a member from another seed. A folder without a marker was written before
    the marker existed, with member m's seed ``experiment_seed + m``."""
    if not checkpoint_dir:
        return None
    folder = Path(checkpoint_dir) / f"member_{index}"
    marker = folder / SEED_MARKER
    if is_rank_zero():
        if folder.exists():
            found = (
                int(load_checkpoint(marker)["seed"]) if marker.exists() else experiment_seed + index
            )
            if found != seed:
                logger.warning(
                    "%s: member %d trained from seed %d, not %d (an older tradi's seed scheme); "
                    "training it afresh",
                    folder,
                    index,
                    found,
                    seed,
                )
                shutil.rmtree(folder)
        save_atomic({"seed": seed}, marker)
    barrier()  # no rank trains before the folder is ready
    return folder
