"""Text files written so that a kill during the write leaves the previous file intact."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, flush it to disk, then rename it over ``path``
    (``os.replace`` is atomic): ``path`` is always the old file or the whole new one.
    Torch files go through `tradi.training.checkpoint.save_atomic`, which does the same."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
