"""What a run shows on the console: tradi's log levels for progress bars or log lines, set for
one `tradi` command and set back after (torch-free: the CLI imports it before any training)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


def configure_logging(progress: bool, epoch_lines: bool = True) -> None:
    """Log lines on stderr where no progress bars are shown. Without ``epoch_lines`` the
    training package logs warnings only: the runner's lines per training (seed and methods,
    each method's headline) stand in for the epoch lines (issue 21: ~220 in `make demo`). A
    logging level, not a change to the training loop; it also drops the loop's "resumed from
    ... at epoch N" line."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("tradi").setLevel(logging.NOTSET if progress else logging.INFO)
    logging.getLogger("tradi.training").setLevel(logging.NOTSET if epoch_lines else logging.WARNING)


@contextmanager
def console_logging(progress: bool, epoch_lines: bool) -> Iterator[None]:
    """`configure_logging` for one `main` call, the levels set back after: `main` called in a
    Python process (tests, notebooks) must not leave tradi's loggers muted."""
    loggers = [logging.getLogger("tradi"), logging.getLogger("tradi.training")]
    levels = [logger.level for logger in loggers]
    configure_logging(progress, epoch_lines)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
