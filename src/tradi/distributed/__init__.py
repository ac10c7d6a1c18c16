"""Data-parallel runs on torch.distributed (DDP), launched by torchrun or `launch`.

Under DDP every rank applies the same all-reduced gradients with the same optimizer, so every
rank's weights, `WeightTracker` and SWAG statistics stay identical without any communication of
their own; only evaluation needs reduction, and rank 0 alone writes. See docs/distributed.md.
"""

from tradi.distributed.batchnorm import GlobalBatchNorm
from tradi.distributed.collectives import all_gather_tensors, all_reduce_sums
from tradi.distributed.context import (
    DEFAULT_TIMEOUT_S,
    DistributedContext,
    barrier,
    init_from_env,
    is_rank_zero,
    rank,
    rank_zero_only,
    shutdown,
    world_size,
)
from tradi.distributed.data import (
    ShardedBatches,
    ShardedBatchSampler,
    global_batches,
    shard_dataset,
    shard_loader,
)
from tradi.distributed.ddp import data_parallel
from tradi.distributed.launch import DistributedRunError, launch
from tradi.distributed.sharded import full_state_dict
from tradi.plumbing.structure import unwrap  # re-exported: the one way to look through wrappers

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistributedContext",
    "DistributedRunError",
    "GlobalBatchNorm",
    "ShardedBatchSampler",
    "ShardedBatches",
    "all_gather_tensors",
    "all_reduce_sums",
    "barrier",
    "data_parallel",
    "full_state_dict",
    "global_batches",
    "init_from_env",
    "is_rank_zero",
    "launch",
    "rank",
    "rank_zero_only",
    "shard_dataset",
    "shard_loader",
    "shutdown",
    "unwrap",
    "world_size",
]
