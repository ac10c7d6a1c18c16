"""Atomic, verified epoch checkpoints (the previous one kept) and the random-number state needed
for bit-identical resumption."""

from __future__ import annotations

import logging
import os
import random
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tradi.plumbing.loaders import loader_generators

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(OSError):
    """A checkpoint that cannot be read (truncated, zero bytes, corrupted, not a checkpoint),
    nor its kept previous version. The message names the file(s) and what to do.

    An ``OSError``: like any unreadable file, the ``tradi`` CLI reports it as one
    ``tradi: error: ...`` line with exit status 2 (its handler catches ``OSError``).
    """


def previous_path(path: Path) -> Path:
    """Where `save_atomic` keeps the version that ``path`` replaced: ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` so that ``path`` always holds a complete, verified file, even after a
    crash, and keep the version it replaces as `previous_path` (``checkpoint.prev.pt``).

    The file is written beside the target (``.tmp``), flushed to disk (fsync), verified (every
    record's CRC-32 in torch's zip container re-read from the file: `verify_file`), then the
    current file is hard-linked to the previous name and the new one renamed over it
    (``os.replace`` is atomic on POSIX and Windows); the folder is fsynced last. A crash at any
    point leaves ``path`` the old complete file or the new one. Raises `CheckpointError` if the
    written file does not read back (a failing disk or file system), ``OSError`` if it cannot
    be written (e.g. a full disk; ``path`` is then untouched).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    problem = _damage(tmp)
    if problem is not None:
        raise CheckpointError(
            f"{tmp} does not read back as written ({problem}): the disk or file system under "
            f"{path.parent} loses data; {path} was left unchanged"
        )
    if path.exists():
        _keep_previous(path)
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _keep_previous(path: Path) -> None:
    """Make ``previous_path(path)`` the file now at ``path``: a hard link (no copy, and ``path``
    never disappears), or a copy where the file system has no hard links."""
    previous = previous_path(path)
    previous.unlink(missing_ok=True)
    try:
        os.link(path, previous)
    except OSError:  # e.g. some network or FAT file systems
        tmp = previous.with_name(previous.name + ".tmp")
        tmp.write_bytes(path.read_bytes())
        os.replace(tmp, previous)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def verify_file(path: Path) -> None:
    """Raise `CheckpointError` unless ``path`` is a complete torch file whose every record
    matches its CRC-32 (stored by ``torch.save`` in its zip container; checked with the
    standard library's ``zipfile``). ``torch.load`` alone accepts a file with flipped bytes in
    a tensor's data: it does not check the CRCs."""
    problem = _damage(path)
    if problem is not None:
        raise CheckpointError(f"{path} is damaged ({problem})")


def _damage(path: Path) -> str | None:
    """What is wrong with ``path`` as a torch zip file, or None."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "zero bytes"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except FileNotFoundError:
        return "missing"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return f"not a complete checkpoint: {error}"
    return None if bad is None else f"record {bad} fails its CRC-32 check"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_atomic` onto the CPU (tensors only, no pickled code).

    ``path`` is verified first (`verify_file`). If it is missing or damaged (a crash during a
    copy, a truncated or zero-byte file, random bytes) and the previous version
    (``checkpoint.prev.pt``, one epoch older) is sound, that one is returned with a warning:
    training then repeats one epoch, with the same result. Raises `CheckpointError` naming
    both files and what to do when neither can be read.
    """
    problems: list[str] = []
    for candidate in (path, previous_path(path)):
        state, problem = _read(candidate)
        if state is None:
            problems.append(f"{candidate.name}: {problem}")
            continue
        if candidate != path:
            logger.warning(
                "checkpoint %s cannot be read (%s); resuming from the previous one, %s",
                path,
                problems[0],
                candidate.name,
            )
        return state
    raise CheckpointError(
        f"cannot resume from the checkpoint in {path.parent} ({'; '.join(problems)}): delete "
        f"{path.name} and {previous_path(path).name} there to train that run from its start"
    )


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``path``'s state and None, or None and what is wrong with it."""
    problem = _damage(path)
    if problem is not None:
        return None, problem
    try:
        return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as error:  # whatever torch.load raises, the file is bad
        return None, f"not a checkpoint: {type(error).__name__}: {str(error)[:200]}"


def capture_rng_state(loader: Iterable[Any]) -> dict[str, Any]:
    """Every random state that training consumes: torch (CPU, CUDA), NumPy, Python, the loader."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": random.getstate(),
        "loader": [g.get_state() for g in loader_generators(loader)],
    }


def restore_rng_state(state: dict[str, Any], loader: Iterable[Any]) -> None:
    """Inverse of ``capture_rng_state``; the loader must be built the same way as when captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # a GPU run resumed on a CPU keeps going
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generators = loader_generators(loader)
    if len(generators) != len(state["loader"]):
        raise ValueError(
            f"the training loader has {len(generators)} random generator(s) but the checkpoint "
            f"saved {len(state['loader'])}; resume with a loader built like the original"
        )
    for generator, generator_state in zip(generators, state["loader"], strict=True):
        generator.set_state(generator_state)
