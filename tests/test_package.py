"""The top-level package: light import, lazy access to the heavier subpackages."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tradi


def test_import_tradi_does_not_load_torchmetrics_or_matplotlib() -> None:
    code = "import sys, tradi; print('torchmetrics' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_lazy_names_resolve_to_their_subpackages() -> None:
    from tradi.methods import build_method
    from tradi.training import fit

    assert tradi.build_method is build_method
    assert tradi.fit is fit
    assert set(tradi.METHODS) == {
        "mcp",
        "mc_dropout",
        "deep_ensembles",
        "swag",
        "gaussian_perturbation",
        "tradi",
        "ivon",
        "temperature_scaling",
        "tradi_modes",
    }
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = tradi.nope
