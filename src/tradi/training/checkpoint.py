"""Atomic epoch checkpoints and the random-number state needed for bit-identical resumption."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tradi.plumbing.loaders import loader_generators

CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` so that ``path`` always holds a complete checkpoint, even after a crash.

    The file is written beside the target, flushed to disk, then renamed over it (os.replace is
    atomic on POSIX and Windows).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_atomic`` onto the CPU (tensors only, no pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
