"""Deep Ensembles (Lakshminarayanan et al., 2017): M networks from different seeds, averaged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tradi.methods.base import FitInfo, Method
from tradi.plumbing.structure import unwrap
from tradi.training import Callback, FitResult


@dataclass(frozen=True)
class DeepEnsemblesOptions:
    """``n_members``: networks trained one after another with seeds seed, seed + 1, ..."""

    n_members: int = 5

    def __post_init__(self) -> None:
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {self.n_members}")


class DeepEnsembles(Method):
    """M members, each built and trained through the shared loop from its own seed.

    Member 0 is the seed's ordinary run, so the runner lets it be the run other methods share.
    The reported training time is the sum of the members' (they could run in parallel, but
    the cost is M trainings). With a checkpoint directory, member i checkpoints in
    ``member_{i}/`` so an interrupted ensemble resumes where it stopped.
    """

    name = "deep_ensembles"
    label = "Deep Ensembles"
    short_label = "Deep Ens."
    options_type = DeepEnsemblesOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members: list[nn.Module] = []

    def train_network(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None,
    ) -> tuple[nn.Module, FitResult]:
        """Member 0: the seed's ordinary run (the one other methods share), in ``member_0/``."""
        return self._train_network(
            self.train.seed, train_loader, val_loader, callbacks, _member_dir(checkpoint_dir, 0)
        )

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
        """Take ``model`` as member 0 and train members 1..M-1 (seeds seed + i, checkpoints in
        ``checkpoint_dir/member_i``). ``train_seconds``: member 0's share of its run (as
        `Method.adopt`) plus the other members' runs."""
        first = super().adopt(model, result, train_loader, val_loader, callbacks=callbacks)
        members, runs = [model], [result]
        for index in range(1, self.options.n_members):
            member, run = self._train_network(
                self.train.seed + index,
                train_loader,
                val_loader,
                (),
                _member_dir(checkpoint_dir, index),
            )
            members.append(member)
            runs.append(run)
        self.members = members
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
        return {"members": [unwrap(member).state_dict() for member in self.members]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
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


def _member_dir(checkpoint_dir: str | Path | None, index: int) -> Path | None:
    return Path(checkpoint_dir) / f"member_{index}" if checkpoint_dir else None
