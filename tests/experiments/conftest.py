"""A tiny config for the blobs benchmark (the `blobs` fixture of tests/conftest.py), small
enough to train every method in seconds."""

from __future__ import annotations

import copy
from typing import Any

import pytest

TINY_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "description": "synthetic blobs",
    "benchmark": "mnist-notmnist",  # the paper's table is looked up by this name
    "data": {"val_fraction": 0.1, "split_seed": 0, "batch_size": 32, "eval_batch_size": 64},
    "model": {"name": "mlp", "options": {"hidden_features": [16, 16], "dropout": 0.1}},
    "train": {"epochs": 3, "optimizer": "adam", "lr": 0.01, "scheduler": "step", "step_size": 2},
    "methods": {
        "mcp": {},
        "deep_ensembles": {"n_members": 2},
        "tradi": {"scale": "auto", "n_samples": 4, "init_variance": 0.0},
    },
    "seeds": [0, 1],
    "scale_selection": {"tolerance": 0.2, "iterations": 2, "low": 0.1, "high": 100.0},
    "threads": 1,
}


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    """A fresh copy to edit."""
    return copy.deepcopy(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_config_template() -> dict[str, Any]:
    """The shared original: do not edit (module-scoped fixtures build runs from it)."""
    return TINY_CONFIG
