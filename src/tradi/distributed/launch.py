"""Start N processes on this machine, as `tradi run --nproc N` does, without torchrun.

Each process gets torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), joins the process group and calls the function. If one rank raises or dies, the
others are stopped at once and `launch` raises `DistributedRunError` naming that rank and its
traceback: a failure never leaves the run hanging in a collective.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

from tradi.distributed.context import DEFAULT_TIMEOUT_S, init_from_env


class DistributedRunError(RuntimeError):
    """A rank of a distributed run failed; the message names it and carries its traceback."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(
    local_rank: int,
    nproc: int,
    port: int,
    backend: str | None,
    timeout_s: float,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if "OMP_NUM_THREADS" not in os.environ:  # N processes share the cores, as torchrun does
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    init_from_env(backend, timeout_s=timeout_s)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable[..., Any],
    nproc: int,
    args: tuple[Any, ...] = (),
    *,
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Run `fn(*args)` in `nproc` processes of one process group (in this process if nproc=1).

    `fn` and `args` must be picklable (a module-level function): the processes are spawned.
    Results travel through files written by rank 0 (`rank_zero_only`), not return values.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if nproc == 1:
        fn(*args)
        return
    port = _free_port()
    try:
        mp.spawn(_worker, args=(nproc, port, backend, timeout_s, fn, args), nprocs=nproc)
    except ProcessRaisedException as error:
        raise DistributedRunError(
            f"rank {error.error_index} of {nproc} raised an exception; the other ranks were "
            f"stopped. Its traceback:\n{error}"
        ) from None
    except ProcessExitedException as error:
        raise DistributedRunError(
            f"rank {error.error_index} of {nproc} exited with code {error.exit_code}"
            f"{f' ({error.signal_name})' if error.signal_name else ''}; the other ranks were stopped"
        ) from None
