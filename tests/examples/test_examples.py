"""Every script in examples/ runs, on its small data, and gives sensible numbers."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _main(name: str) -> Any:
    return runpy.run_path(str(EXAMPLES / name))["main"]


def test_every_example_is_tested() -> None:
    tested = {"own_model.py", "lightning_callback.py", "segmentation.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_own_model(capsys: pytest.CaptureFixture[str]) -> None:
    result = _main("own_model.py")(epochs=8, n_samples=4)
    assert result.classification["accuracy"] > 0.85  # 5 classes: chance is 0.2
    assert result.ood["mcp"]["auroc"] > 0.7  # digits 5-9 less confident than 0-4
    out = capsys.readouterr().out
    assert "TRADI ensemble" in out and "chosen on validation data" in out  # fit_ensemble


def test_lightning_callback() -> None:
    pytest.importorskip("lightning.pytorch")
    result = _main("lightning_callback.py")(epochs=5, n_samples=4)
    assert result.classification["accuracy"] > 0.8
    assert result.ood["mcp"]["auroc"] > 0.7


def test_segmentation() -> None:
    result = _main("segmentation.py")()  # its own 8 epochs and 8 samples: ~5 s of CPU
    assert result["accuracy"] > 0.85  # background alone is ~0.8 of the pixels
    assert result["auroc"] > 0.6  # the unseen object's pixels are less confident
