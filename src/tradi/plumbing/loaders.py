"""The random generators that decide a data loader's shuffling (saved by checkpoints, reseeded by
the scale search)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def loader_generators(loader: Iterable[Any]) -> list[torch.Generator]:
    """The distinct generators that decide a loader's shuffling (its own and its sampler's)."""
    owners = (
        loader,
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    )
    found: list[torch.Generator] = []
    for owner in owners:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found
