"""Every script in examples/ runs, on its small data, gives sensible numbers, emits no warning of
tradi's (an example shows the right way: enough tracked steps, or the documented remedy) and
leaves torch's thread count as it found it."""

from __future__ import annotations

import runpy
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import tradi

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Warnings attributed to files outside these folders are tradi's or the example's own: a
#: tradi warning's stacklevel points it at its caller (an example, tradi itself), never at an
#: installed library; a library's own warning (Lightning's) is attributed to the library.
THIRD_PARTY = tuple(
    Path(sysconfig.get_paths()[key]).resolve()
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
)


def ours(caught: list[warnings.WarningMessage]) -> list[str]:
    """The warnings of ``caught`` not attributed to the standard library or an installed package."""
    return [
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"
        for w in caught
        if not any(Path(w.filename).resolve().is_relative_to(folder) for folder in THIRD_PARTY)
    ]


def _main(name: str) -> Callable[..., Any]:
    return runpy.run_path(str(EXAMPLES / name))["main"]


@pytest.fixture(autouse=True)
def no_tradi_warning() -> Iterator[None]:
    """Fail the test if tradi or the example warned; check the threads are restored."""
    threads = torch.get_num_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    emitted = ours(caught)
    assert not emitted, "an example emitted tradi warnings:\n" + "\n".join(emitted)
    assert torch.get_num_threads() == threads


def test_every_example_is_tested() -> None:
    tested = {"own_model.py", "lightning_callback.py", "segmentation.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_own_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = _main("own_model.py")(epochs=8, n_samples=4, figures=tmp_path)
    assert result.classification["accuracy"] > 0.85  # 5 classes: chance is 0.2
    assert result.ood["mcp"]["auroc"] > 0.7  # digits 5-9 less confident than 0-4
    out = capsys.readouterr().out
    assert "TRADI ensemble" in out and "chosen on validation data" in out  # fit_ensemble
    for name in ("own-model-reliability.png", "own-model-mcp.png"):  # docs/own-model.md's
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lightning_callback() -> None:
    pytest.importorskip("lightning.pytorch")
    result = _main("lightning_callback.py")(epochs=5, n_samples=4)
    assert result.classification["accuracy"] > 0.8
    assert result.ood["mcp"]["auroc"] > 0.7


def test_segmentation() -> None:
    result = _main("segmentation.py")()  # its own 8 epochs and 8 samples: ~5 s of CPU
    assert result["accuracy"] > 0.85  # background alone is ~0.8 of the pixels
    assert result["auroc"] > 0.7  # the grey square's pixels are less confident (0.90 measured)


def test_the_warning_check_catches_a_tradi_warning() -> None:
    """The fixture's filter is not vacuous: the tracker's warning (a posterior drawn before the
    tracker has updated) counts as ours, a library's own warning does not."""
    tracker = tradi.WeightTracker(torch.nn.Linear(2, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.posterior("diag")
        warnings.warn_explicit("a library's", UserWarning, str(THIRD_PARTY[2] / "lib.py"), 1)
    assert len(caught) == 2
    assert len(ours(caught)) == 1 and "WeightTracker.posterior()" in ours(caught)[0]
