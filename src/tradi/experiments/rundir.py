"""One output folder, one run: the lock that keeps a second run out of a folder in use, and the
checks that keep a run from deleting or resuming another run's results.

- A live run holds ``OUT/run.lock`` (an exclusive ``fcntl.flock``, which the OS releases when the
  process dies, however it dies); the file names the holder (pid, host, start time, command)
  for the message a refused run prints. A lock left by a dead process is taken over with a log
  line. Under DDP only rank 0 takes it; every rank gets its verdict (`agree`).
- A folder holding another run's results or checkpoints is refused unless the run resumes it
  (``resume``: the shared settings must match, `setting_differences`) or replaces it
  (``overwrite``: tradi's own files are deleted, nothing else in the folder).

The lock is written by hand: ``filelock.FileLock`` truncates the lock file on every attempt, so
a refused run would erase the holder's details that its message needs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist
import yaml

from tradi.distributed import is_rank_zero
from tradi.experiments._files import write_text_atomic
from tradi.experiments.config import ConfigError, ExperimentConfig, config_from_dict

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is then not locked (see `lock_out_dir`)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_NAME = "run.lock"
#: What a run writes into its folder; `--overwrite` deletes these and nothing else.
RUN_FILES = ("state", "results.json", "results.csv", "report.md", "figures", "config.yaml")
#: Their subset that is another run's work: a folder with only config.yaml (a run stopped before
#: its first epoch ended) loses nothing when a new run starts there.
WORK_FILES = ("state", "results.json", "results.csv", "report.md", "figures")
#: Keys whose difference does not change a number: a resume may change them.
FREE_KEYS = ("name", "description", "seeds")


class OutputFolderError(ConfigError):
    """The output folder cannot take this run: another live run holds it, it holds another
    run's results (resume, overwrite, or choose another folder), or a resume's settings differ
    from the saved ones. The message names the folder and what to do."""


@contextmanager
def lock_out_dir(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/run.lock`` for the block (rank 0 of a distributed run; other ranks pass).

    Raises `OutputFolderError` naming the holder when a live process holds it. Outside POSIX
    (no ``fcntl``) the folder is not locked and a warning says so.
    """
    if not is_rank_zero() or fcntl is None:
        if fcntl is None and is_rank_zero():
            logger.warning("%s: no file locks on this platform; run one run per folder", out_dir)
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(out_dir / LOCK_NAME)
    try:
        yield
    finally:
        # unlink before unlocking: a run that opens the file meanwhile finds it gone (`_acquire`)
        (out_dir / LOCK_NAME).unlink(missing_ok=True)
        os.close(descriptor)  # closing releases the flock


def _acquire(path: Path) -> int:
    """Open and flock ``path``, retrying when the file was unlinked between the open and the
    lock (its releasing holder's `lock_out_dir`); write this process's details into it."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise OutputFolderError(
                f"{path.parent} is in use by another run ({_describe(holder)}); wait for it to "
                "finish, or give this run another --out"
            ) from None
        try:
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    stale = _read_holder(descriptor)
    if stale:
        logger.warning(
            "%s: taking over the lock of a run that ended without releasing it (%s)",
            path.parent,
            _describe(stale),
        )
    details = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": shlex.join(sys.argv),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(details).encode(), 0)
    return descriptor


def _read_holder(descriptor: int) -> dict[str, Any]:
    try:
        text = os.pread(descriptor, 65536, 0).decode(errors="replace")
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {"unreadable": True}


def _describe(holder: dict[str, Any]) -> str:
    if not holder or "pid" not in holder:  # being written, or a file of another program
        return "no details recorded"
    return (
        f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
        f"{holder.get('command', '?')}"
    )


def agree(check: Callable[[], T]) -> T | None:
    """Run ``check`` on rank 0 and give every rank its verdict, so that no rank waits in a
    collective for a peer that has stopped: an error raised there is raised on every rank (the
    same `ConfigError` class and message; other errors as ``RuntimeError`` naming rank 0's
    error on the other ranks). Returns ``check``'s value on rank 0, None elsewhere. Outside a
    distributed run: ``check()``."""
    if not dist.is_initialized():
        return check()
    verdict: list[Any] = [None]
    value = None
    failure: Exception | None = None
    if is_rank_zero():
        try:
            value = check()
        except Exception as error:  # re-raised below, on every rank
            failure = error
            verdict[0] = (
                isinstance(error, OutputFolderError),
                isinstance(error, ConfigError),
                str(error),
            )
    dist.broadcast_object_list(verdict, src=0)
    if failure is not None:
        raise failure
    if verdict[0] is not None:
        folder, config, message = verdict[0]
        if config:
            raise (OutputFolderError if folder else ConfigError)(message)
        raise RuntimeError(f"rank 0 failed while preparing the output folder: {message}")
    return value


@contextmanager
def claim_out_dir(
    out_dir: Path, config: ExperimentConfig, *, resume: bool, overwrite: bool
) -> Iterator[None]:
    """Lock ``out_dir`` for the block and make it ready for ``config`` (`prepare_out_dir`), with
    every rank of a distributed run given rank 0's verdict. Raises `OutputFolderError`."""
    with ExitStack() as stack:

        def claim() -> None:
            stack.enter_context(lock_out_dir(out_dir))
            prepare_out_dir(out_dir, config, resume=resume, overwrite=overwrite)

        agree(claim)
        yield


def prepare_out_dir(
    out_dir: Path, config: ExperimentConfig, *, resume: bool, overwrite: bool
) -> None:
    """Check that ``out_dir`` may take ``config``'s run, clear it if asked, write config.yaml.

    ``resume``: a saved config.yaml must agree with ``config`` on every shared setting
    (`setting_differences`). Otherwise a folder holding another run's work (`WORK_FILES`) is
    refused unless ``overwrite``, which deletes tradi's files (`RUN_FILES`) and nothing else.
    Raises `OutputFolderError` naming the folder and the choices (--resume, --overwrite, --out).
    """
    if resume and overwrite:
        raise OutputFolderError(
            "resume and overwrite exclude each other: --resume continues the run in "
            f"{out_dir}, --overwrite deletes it; choose one"
        )
    if resume:
        _check_resumed_settings(out_dir, config)
    else:
        work = [name for name in WORK_FILES if (out_dir / name).exists()]
        if work and not overwrite:
            raise OutputFolderError(
                f"{out_dir} holds another run ({', '.join(work)}): continue it with --resume, "
                "replace it with --overwrite (its results are deleted), or give this run "
                "another --out"
            )
        for name in RUN_FILES:
            _remove(out_dir / name)
        if work:
            logger.warning(
                "overwrite: removed the previous run's %s in %s", ", ".join(work), out_dir
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _check_resumed_settings(out_dir: Path, config: ExperimentConfig) -> None:
    saved = out_dir / "config.yaml"
    if not saved.exists():
        return
    try:
        previous = config_from_dict(yaml.safe_load(saved.read_text()))
    except (ConfigError, ValueError, TypeError, yaml.YAMLError) as error:
        raise OutputFolderError(
            f"{saved} cannot be read ({error}): resume needs the settings of the run in "
            f"{out_dir}; start afresh with --overwrite or give this run another --out"
        ) from None
    differences = setting_differences(previous, config)
    if differences:
        raise OutputFolderError(
            f"{out_dir} holds a run with other settings ({'; '.join(differences)}): resume it "
            "with the same settings (seeds and methods may be added), start afresh with "
            "--overwrite, or give this run another --out"
        )


def setting_differences(previous: ExperimentConfig, config: ExperimentConfig) -> list[str]:
    """Each setting that differs as ``"dotted.key: old -> new"``, with defaults filled in (the
    training recipe and every method's options as parsed), so that a default written out
    equals one left out. Not compared: `FREE_KEYS` (the seeds, the name and description) and
    the methods that only one of the two has (a resume may add seeds and methods, or run
    fewer of them: their finished pairs stay in state/)."""
    before, now = _resolved(previous), _resolved(config)
    shared = before["methods"].keys() & now["methods"].keys()
    for side in (before, now):
        side["methods"] = {name: side["methods"][name] for name in sorted(shared)}
    flat_before, flat_now = _flatten(before), _flatten(now)
    return [
        f"{key}: {_show(flat_before, key)} -> {_show(flat_now, key)}"
        for key in sorted(flat_before.keys() | flat_now.keys())
        if flat_before.get(key, _MISSING) != flat_now.get(key, _MISSING)
    ]


_MISSING = object()


def _resolved(config: ExperimentConfig) -> dict[str, Any]:
    settings = {k: v for k, v in config.to_dict().items() if k not in FREE_KEYS}
    train = dataclasses.asdict(config.train_config(0))
    settings["train"] = {k: v for k, v in train.items() if k not in ("seed", "progress", "device")}
    settings["methods"] = {
        name: dataclasses.asdict(config.method_options(name)) for name in config.methods
    }
    return settings


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def _show(flat: dict[str, Any], key: str) -> str:
    return "(unset)" if key not in flat else json.dumps(flat[key], default=str)
