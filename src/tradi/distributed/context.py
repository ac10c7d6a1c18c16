"""Who am I in a distributed run: process-group set-up from torchrun's environment, rank queries
and rank-0-only side effects.

Every helper works unchanged in a plain single-process run (rank 0 of 1), so code written for
N processes needs no `if distributed:` branches.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import ParamSpec, TypeVar

import torch
import torch.distributed as dist

P = ParamSpec("P")
R = TypeVar("R")

#: How long a collective may wait for a silent peer before it raises (not for a crashed peer:
#: the launcher stops every rank as soon as one fails).
DEFAULT_TIMEOUT_S = 1800.0
# how long `shutdown` leaves the GIL to gloo's threads after the last collective (seconds)
SHUTDOWN_GRACE_S = 0.05


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run and the device it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(
            f"WORLD_SIZE > 1 but {name} is not set: start the run with torchrun "
            "(or tradi.distributed.launch), which sets RANK, LOCAL_RANK, WORLD_SIZE, "
            "MASTER_ADDR and MASTER_PORT"
        )
    return int(value)


def init_from_env(
    backend: str | None = None,
    *,
    device: str | torch.device | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    init_method: str = "env://",
) -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    `init_method` is where the ranks meet: torchrun's MASTER_ADDR/MASTER_PORT by default;
    `launch` passes a file store of its own, which needs no free port.

    Without WORLD_SIZE (or with WORLD_SIZE=1) nothing is initialised: a single-process run.
    The backend defaults to NCCL when CUDA is used and gloo otherwise; each process takes the
    GPU of its LOCAL_RANK. Calling it again in an initialised process returns the same context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = torch.cuda.is_available() and (
        device is None or torch.device(device).type == "cuda"
    )
    if world_size <= 1:
        chosen = torch.device(device) if device is not None else torch.device("cpu")
        return DistributedContext(0, 0, 1, chosen)
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if wants_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend or ("nccl" if wants_cuda else "gloo"),
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return DistributedContext(rank, local_rank, world_size, chosen)


def rank() -> int:
    """This process's global rank (0 outside a distributed run)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a distributed run)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank_zero() -> bool:
    """True in the one process that writes checkpoints, results and logs."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process): e.g. before reading what rank 0 wrote."""
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group at the end of a successful run (no-op outside a distributed run).

    A barrier, `destroy_process_group`, then `SHUTDOWN_GRACE_S` of sleep. Not ceremony: gloo's
    worker threads drop a finished collective's tensors (a Python decref, which takes the GIL)
    just after the collective completes. A process group that outlives `destroy_process_group`
    (a DistributedDataParallel model keeps its group alive from C++, as FSDP2's device mesh
    does) still has those threads at interpreter shutdown, and a decref that waits for the GIL
    then aborts the process ("terminate called without an active exception", exit code -6).
    The barrier ends the collectives on every rank; the sleep frees the GIL so that the threads
    finish their decrefs before the interpreter shuts down. Measured in docs/distributed.md
    ("Leaving the process group"). Call it on every rank, and only when every rank succeeded
    (a failed rank would leave the others waiting in the barrier).
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        time.sleep(SHUTDOWN_GRACE_S)


def rank_zero_only(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Decorate a side effect (a file write, a print) so that only rank 0 performs it.

    Other ranks get None. Never wrap a function that runs collectives: rank 0 would wait alone.
    """

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | None:
        return fn(*args, **kwargs) if is_rank_zero() else None

    return wrapped
