"""Which samples each rank sees.

Training: `shard_loader` keeps the single-process run's global batches and gives rank r the r-th
part of each one (`ShardedBatches` does the same to an existing loader of in-memory batches).
DDP averages the ranks' gradients, so every optimizer step is the step one process would take
on the whole global batch, and trackers match a single-process run.

Evaluation: `shard_dataset` gives each rank one contiguous block, every sample exactly once (no
padding, unlike DistributedSampler), so predictions gathered in rank order are the dataset's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
)

import tradi.distributed.context as context


def _split_bounds(length: int, parts: int, index: int) -> tuple[int, int]:
    """Bounds of part `index` when `length` items are cut into `parts` near-equal blocks."""
    base, extra = divmod(length, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


class ShardedBatchSampler(BatchSampler):
    """The global batches of `sampler`, each cut into `world_size` parts; yields part `rank`.

    Every rank draws the same order (the sampler's generator has the same seed everywhere), so
    the parts of one global batch are disjoint and together are that batch. A last global batch
    smaller than the number of ranks is dropped: a rank without data would stall the others.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        global_batch_size: int,
        *,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(sampler, global_batch_size, drop_last)
        self.rank = context.rank() if rank is None else rank
        self.world_size = context.world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, {self.world_size}), got {self.rank}")
        if global_batch_size % self.world_size:
            raise ValueError(
                f"the global batch size {global_batch_size} must divide by the number of "
                f"processes {self.world_size}, so that every rank's batch has the same size"
            )

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            if len(batch) < self.world_size:
                return
            start, stop = _split_bounds(len(batch), self.world_size, self.rank)
            yield batch[start:stop]

    def __len__(self) -> int:
        full, last = divmod(len(self.sampler), self.batch_size)  # type: ignore[arg-type]
        return full + (1 if last >= self.world_size and not self.drop_last else 0)


def shard_loader(
    dataset: Dataset[Any],
    global_batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    **loader_kwargs: Any,
) -> DataLoader[Any]:
    """A training loader whose global batches are those of one process, split across ranks.

    With one process it yields exactly what `DataLoader(dataset, global_batch_size,
    shuffle=shuffle, generator=torch.Generator().manual_seed(seed))` yields. The shuffling
    generator advances epoch after epoch like a DataLoader's (no `set_epoch` to call) and is
    the loader's `generator`, so checkpoints save and restore it.
    `loader_kwargs` (num_workers, pin_memory, collate_fn, ...) go to the DataLoader.
    """
    # one generator for the sampler and the loader: a DataLoader draws its workers' base seed
    # from its generator every epoch, and that draw is part of the single-process sequence
    generator = torch.Generator().manual_seed(seed)
    sampler: Sampler[int] = (
        RandomSampler(dataset, generator=generator)  # type: ignore[arg-type]
        if shuffle
        else SequentialSampler(dataset)  # type: ignore[arg-type]
    )
    batches = ShardedBatchSampler(sampler, global_batch_size, drop_last=drop_last)
    return DataLoader(dataset, batch_sampler=batches, generator=generator, **loader_kwargs)


def shard_dataset(dataset: Dataset[Any]) -> Subset[Any]:
    """This rank's contiguous block of `dataset` for evaluation: blocks differ by at most one
    sample, cover the dataset once, and are in rank order (see `all_gather_tensors`)."""
    if not isinstance(dataset, Sized):
        raise TypeError("shard_dataset needs a dataset with a length")
    start, stop = _split_bounds(len(dataset), context.world_size(), context.rank())
    return Subset(dataset, range(start, stop))


class ShardedBatches:
    """Rank r's part of every global batch of an existing loader, split along dim 0.

    For loaders whose batches are tensors already in memory (the runner's `TensorBatches`):
    every rank iterates the same global batches (same seed, same augmentation draws) and keeps
    its near-equal contiguous part, so a run of N processes sees the single-process batches.
    Each rank materialises whole global batches: for datasets read from disk, `shard_loader`
    reads only this rank's samples. A last global batch with fewer samples than ranks is
    skipped (a rank without data would stall the others); `len()` still counts it.
    `generator` is the wrapped loader's, so checkpoints save and restore the shuffling.
    """

    def __init__(
        self, loader: Iterable[Any], *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        self.loader = loader
        self.rank = context.rank() if rank is None else rank
        self.world_size = context.world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, {self.world_size}), got {self.rank}")

    @property
    def generator(self) -> torch.Generator | None:
        return getattr(self.loader, "generator", None)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            parts = batch if isinstance(batch, (tuple, list)) else (batch,)
            size = parts[0].shape[0]
            if size < self.world_size:
                return
            start, stop = _split_bounds(size, self.world_size, self.rank)
            local = [part[start:stop] for part in parts]
            yield type(batch)(local) if isinstance(batch, (tuple, list)) else local[0]


def global_batches(loader: Iterable[Any]) -> Iterable[Any]:
    """The loader of whole global batches inside a `ShardedBatches` (any other loader as is).

    Passes over the training data that are not training steps (the per-sample BatchNorm
    re-estimation of sampled weight sets) iterate it, so that every rank computes what one
    process computes, without collectives.
    """
    return loader.loader if isinstance(loader, ShardedBatches) else loader
