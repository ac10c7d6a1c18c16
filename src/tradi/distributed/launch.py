"""Start N processes on this machine, as `tradi run --nproc N` does, without torchrun.

Each process gets torchrun's rank variables (RANK, LOCAL_RANK, WORLD_SIZE), joins the process
group through a file store in a folder of the launch's own (no port to probe) and calls the
function. When a rank fails, its peers
usually fail a moment later in a collective ("connection closed by peer"); `launch` stops every
rank and raises `DistributedRunError` naming the rank that failed FIRST, with its traceback, and
listing the others' errors after it: a failure never leaves the run hanging, and the message
points at the cause rather than at its echoes.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tradi.distributed.context import DEFAULT_TIMEOUT_S, init_from_env, shutdown

#: After the first failure, how long the other ranks get to fail by themselves (and say why)
#: before they are terminated.
GRACE_S = 5.0


class DistributedRunError(RuntimeError):
    """A rank of a distributed run failed; the message names it and carries its traceback."""


def _worker(
    rank: int,
    nproc: int,
    backend: str | None,
    timeout_s: float,
    errors: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
    )
    if "OMP_NUM_THREADS" not in os.environ:  # N processes share the cores, as torchrun does
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    try:
        # the ranks meet in a file store in this launch's own folder: no port to probe, so two
        # launches at once (two test workers, say) can never race for the same port
        init_from_env(backend, timeout_s=timeout_s, init_method=f"file://{errors}/rendezvous")
        fn(*args)
        shutdown()
    except BaseException:
        report = Path(errors) / f"rank{rank}.txt"
        report.write_text(f"{time.time()!r}\n{traceback.format_exc()}")
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
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
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tradi-launch-") as errors:
        processes = [
            context.Process(
                target=_worker,
                args=(rank, nproc, backend, timeout_s, errors, fn, args),
                name=f"tradi-rank{rank}",
            )
            for rank in range(nproc)
        ]
        for process in processes:
            process.start()
        try:
            _wait_for_success_or_first_failure(processes)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:
                process.join()
        failed = [rank for rank, p in enumerate(processes) if p.exitcode not in (0, None)]
        if failed:
            raise DistributedRunError(_failure_message(Path(errors), processes, failed))


def _wait_for_success_or_first_failure(processes: list[Any]) -> None:
    """Return when every process has ended, or GRACE_S after the first one failed."""
    running = list(processes)
    deadline: float | None = None
    while running:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ended = wait([p.sentinel for p in running], timeout=timeout)
        if not ended:  # the grace period is over
            return
        for process in [p for p in running if p.sentinel in ended]:
            process.join()
            running.remove(process)
            if process.exitcode != 0 and deadline is None:
                deadline = time.monotonic() + GRACE_S


def _failure_message(errors: Path, processes: list[Any], failed: list[int]) -> str:
    reports: list[tuple[float, int, str]] = []
    for rank in failed:
        path = errors / f"rank{rank}.txt"
        if path.exists():
            stamp, _, text = path.read_text().partition("\n")
            reports.append((float(stamp), rank, text.rstrip()))
    nproc = len(processes)
    if not reports:
        codes = ", ".join(f"rank {r}: exit code {processes[r].exitcode}" for r in failed)
        return f"{len(failed)} of {nproc} ranks died without a Python error ({codes})"
    reports.sort()
    _, first, text = reports[0]
    lines = [f"rank {first} of {nproc} failed first; the other ranks were stopped. Its traceback:"]
    lines.append(text)
    for _, rank, later in reports[1:]:
        lines.append(f"(then rank {rank} failed: {later.splitlines()[-1]})")
    reported = {rank for _, rank, _ in reports}
    for rank in failed:
        if rank not in reported and processes[rank].exitcode != -signal.SIGTERM:
            lines.append(
                f"(rank {rank} died without a Python error: exit code {processes[rank].exitcode})"
            )
    return "\n".join(lines)
