"""Batches of an in-memory `TensorSplit`, shuffled and augmented from one seeded generator.

The shuffling order and the augmentation draws come from ``generator`` alone, which the training
loop's checkpoints save and restore (`tradi.plumbing.loaders.loader_generators` finds it as
the loader's ``generator`` attribute): an interrupted run resumes with the very batches it would
have seen. Indexing whole batches avoids per-sample collation, which dominates small models.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from tradi.data import Augment, TensorSplit


class TensorBatches:
    """Iterable of ``(x, y)`` batches over ``split``; reshuffled each pass when ``shuffle``."""

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            x, y = self.split[order[start : start + self.batch_size]]
            if self.augment is not None:
                x, y = self.augment(x, y, self.generator)
            yield x, y
