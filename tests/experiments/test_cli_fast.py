"""The console script answers at once (issue 21): listing, showing and refusing a mistyped name
import no torch; Ctrl-C at any moment is one line and status 130; the log on a non-terminal has
one line per training; ``--overwrite`` reaches the runner."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tradi.cli import _parse, main
from tradi.experiments.console import configure_logging as _configure_logging

#: Runs ``main(ARGV)`` in a fresh interpreter and prints whether torch was imported: a check of
#: the module set, never of a time (timings are `benchmarks/bench_cli.py`'s).
_TORCH_FREE = """\
import sys
from tradi.cli import main
status = main(sys.argv[1:])
heavy = sorted({'torch', 'torchmetrics', 'scipy', 'tradi.experiments.config'} & set(sys.modules))
print(status, heavy)
"""


def _python(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "status", "printed"),
    [
        (["list"], 0, "digits"),
        (["show", "digits"], 0, "benchmark: digits"),
        (["run", "no-such-config"], 2, "neither a config file nor a shipped config"),
        (["run", "digits", "--seeds", "0"], 2, "--seeds must be >= 1"),
        (["run", "digits", "--nproc", "0"], 2, "--nproc must be >= 1"),
        (["run", "digits", "train.epochs.x=2"], 2, "train.epochs is a value"),
        (["reproduce", "my-config"], 2, "unknown config 'my-config'"),
    ],
)
def test_listing_and_refusals_import_no_torch(argv: list[str], status: int, printed: str) -> None:
    done = _python(_TORCH_FREE, *argv)
    assert done.stdout.splitlines()[-1] == f"{status} []", done.stderr
    assert printed in done.stdout + done.stderr


def test_ctrl_c_while_torch_imports_is_one_line(tmp_path: Path) -> None:
    """A KeyboardInterrupt raised by the import of torch itself (where Ctrl-C lands in the
    first seconds of `tradi run`) gives the resume line and 130, no traceback."""
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n" + _TORCH_FREE
    )
    done = _python(code, "run", "digits", "--out", str(tmp_path))
    assert done.stdout.splitlines()[-1] == "130 []"
    assert (
        done.stderr
        == f"\ntradi: interrupted; continue with: tradi run digits --out {tmp_path} --resume\n"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["list"], "tradi: interrupted"),
        (
            ["run", "digits", "--resume"],
            "tradi: interrupted; continue with: tradi run digits --resume",
        ),
    ],
)
def test_ctrl_c_in_a_loader_is_one_line(
    argv: list[str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # were the patch to miss, `run digits` would write runs/ here

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tradi.experiments.catalog.config_names", interrupted)
    monkeypatch.setattr("tradi.experiments.catalog.read_raw_config", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err == f"\n{line}\n"


@pytest.fixture
def logger_levels() -> Iterator[None]:
    """`_configure_logging` sets levels on process-wide loggers: put them back."""
    names = ("tradi", "tradi.training")
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("logger_levels")
@pytest.mark.parametrize("epoch_lines", [True, False])
def test_epoch_lines_only_for_a_terminal(epoch_lines: bool) -> None:
    _configure_logging(progress=False, epoch_lines=epoch_lines)
    # the runner's line per training always; the loop's epoch lines only with epoch_lines
    assert logging.getLogger("tradi.experiments.runner").isEnabledFor(logging.INFO)
    assert logging.getLogger("tradi.training.loop").isEnabledFor(logging.INFO) is epoch_lines
    assert logging.getLogger("tradi.training.loop").isEnabledFor(logging.WARNING)
    _configure_logging(progress=True)  # bars: no info lines at all (the root's WARNING)
    assert not logging.getLogger("tradi.experiments.runner").isEnabledFor(logging.INFO)


@pytest.mark.parametrize("flag", [True, False])
def test_overwrite_reaches_the_runner(
    flag: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, object] = {}

    def record(config: object, out: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr("tradi.experiments.run_experiment", record)
    argv = ["run", "digits", "--out", str(tmp_path), *(["--overwrite"] if flag else [])]
    assert main(argv) == 130
    # passed only when set: runs before and after the runner gains the parameter
    assert seen.get("overwrite", False) is flag and ("overwrite" in seen) is flag


def test_reproduce_takes_overwrite_too() -> None:
    assert _parse(["reproduce", "digits", "--overwrite"]).overwrite is True
    assert _parse(["run", "digits"]).overwrite is False
