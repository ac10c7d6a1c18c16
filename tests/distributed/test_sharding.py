"""Sharding and the single-process behaviour of the distributed helpers (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

import tradi.distributed as td
from tradi.plumbing.loaders import loader_generators
from tradi.tracking import WeightTracker


def dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n), torch.arange(n) % 3)


def test_one_process_shard_loader_is_the_plain_shuffling_loader() -> None:
    data = dataset(45)
    sharded = td.shard_loader(data, 8, shuffle=True, seed=11)
    plain = DataLoader(data, 8, shuffle=True, generator=torch.Generator().manual_seed(11))
    assert len(sharded) == len(plain) == 6
    for _ in range(3):  # epochs differ from each other and match epoch for epoch
        ours = [x.tolist() for x, _ in sharded]
        theirs = [x.tolist() for x, _ in plain]
        assert ours == theirs
    # the one shuffling generator is where checkpoints look for it
    assert loader_generators(sharded) == [sharded.generator]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_parts_partition_every_global_batch(world: int) -> None:
    n, global_batch = 50, 12  # 50 = 4 * 12 + 2
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2)).tolist()
    samplers = [
        td.ShardedBatchSampler(order, global_batch, rank=r, world_size=world)  # type: ignore[arg-type]
        for r in range(world)
    ]
    parts = [list(sampler) for sampler in samplers]
    expected = [order[i : i + global_batch] for i in range(0, n, global_batch)]
    if world > 2:  # a last global batch of 2 samples cannot feed 3 or 4 ranks: dropped
        expected = expected[:-1]
    assert [len(p) for p in parts] == [len(s) for s in samplers] == [len(expected)] * world
    for index, batch in enumerate(expected):
        assert [i for r in range(world) for i in parts[r][index]] == batch
        sizes = [len(parts[r][index]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1


def test_drop_last_and_arguments_are_checked() -> None:
    sampler = SequentialSampler(range(20))
    kept = td.ShardedBatchSampler(sampler, 8, drop_last=True, rank=1, world_size=2)
    assert list(kept) == [[4, 5, 6, 7], [12, 13, 14, 15]] and len(kept) == 2
    with pytest.raises(ValueError, match="must divide"):
        td.ShardedBatchSampler(sampler, 9, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        td.ShardedBatchSampler(sampler, 8, rank=2, world_size=2)
    assert isinstance(
        td.shard_loader(dataset(5), 2, shuffle=False).batch_sampler.sampler, SequentialSampler
    )  # type: ignore[union-attr]
    assert isinstance(td.shard_loader(dataset(5), 2).batch_sampler.sampler, RandomSampler)  # type: ignore[union-attr]


def test_single_process_helpers_are_identities(tmp_path: Path) -> None:
    data = dataset(7)
    assert list(td.shard_dataset(data).indices) == list(range(7))  # type: ignore[arg-type]
    x = torch.randn(3, 2)
    assert td.all_gather_tensors(x) is x
    assert td.all_reduce_sums({"a": 1.5, "b": torch.tensor(2)}) == {"a": 1.5, "b": 2.0}
    assert (td.rank(), td.world_size(), td.is_rank_zero()) == (0, 1, True)
    td.barrier()
    td.shutdown()  # no group to leave: returns at once, nothing initialised
    assert not torch.distributed.is_initialized()

    @td.rank_zero_only
    def write(path: Path) -> str:
        path.write_text("rank 0")
        return "written"

    assert write(tmp_path / "out.txt") == "written"
    assert (tmp_path / "out.txt").read_text() == "rank 0"


def test_init_from_env_without_torchrun_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = td.init_from_env()
    assert (context.rank, context.world_size, context.is_distributed) == (0, 1, False)
    assert context.is_rank_zero and context.device == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        td.init_from_env()


def test_launch_runs_one_process_in_place_and_checks_nproc() -> None:
    seen: list[int] = []
    td.launch(seen.append, 1, (5,))
    assert seen == [5]
    with pytest.raises(ValueError, match="nproc"):
        td.launch(seen.append, 0)


def test_unwrap_and_tracker_names_look_through_ddp(tmp_path: Path) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
        wrapped = DistributedDataParallel(model)
        assert td.unwrap(wrapped) is model and td.unwrap(model) is model
        assert next(iter(wrapped.state_dict())).startswith("module.")
        assert (
            WeightTracker(wrapped).names
            == WeightTracker(model).names
            == [
                "0.weight",
                "0.bias",
                "1.weight",
                "1.bias",
            ]
        )
    finally:
        torch.distributed.destroy_process_group()


def test_sharded_batches_split_every_global_batch_of_a_loader() -> None:
    data = TensorDataset(torch.arange(27).float(), torch.arange(27))
    generator = torch.Generator().manual_seed(4)
    loader = DataLoader(data, 8, shuffle=True, generator=generator)  # batches 8, 8, 8, 3
    start = generator.get_state()
    expected = [y for _, y in loader]  # what one process sees
    parts = []
    for rank in range(3):
        generator.set_state(start)  # every rank starts from the same seed
        sharded = td.ShardedBatches(loader, rank=rank, world_size=3)
        parts.append([y for _, y in sharded])
    assert sharded.generator is generator and len(sharded) == 4
    for index, batch in enumerate(expected):
        assert torch.equal(torch.cat([parts[r][index] for r in range(3)]), batch)
        assert [len(parts[r][index]) for r in range(3)] in ([3, 3, 2], [1, 1, 1])
    tensors_only = td.ShardedBatches([torch.arange(6), torch.arange(1)], rank=1, world_size=2)
    assert [t.tolist() for t in tensors_only] == [[3, 4, 5]]  # the 1-sample batch is skipped
    with pytest.raises(ValueError, match="rank"):
        td.ShardedBatches(loader, rank=3, world_size=3)
