"""A synthetic benchmark and a tiny config, small enough to train every method in seconds."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tradi.data import Benchmark, TensorSplit

NUM_CLASSES = 3


def _blobs(n: int, seed: int, shift: float = 0.0) -> TensorSplit:
    """Three Gaussian blobs in 4-D shaped as 1x2x2 images; ``shift`` moves every point away
    from all blobs (the OOD set)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    centres = 2.5 * torch.eye(NUM_CLASSES, 4)[labels] + shift
    x = centres + torch.randn(n, 4, generator=generator)
    return TensorSplit(x.reshape(n, 1, 2, 2), labels)


def make_benchmark(with_ood_val: bool = True) -> Benchmark:
    return Benchmark(
        name="blobs",
        task="classification",
        train=_blobs(240, 1),
        val=_blobs(90, 2),
        test=_blobs(150, 3),
        ood_test=_blobs(120, 4, shift=-3.0),
        ood_val=_blobs(90, 5, shift=-3.0) if with_ood_val else None,
        num_classes=NUM_CLASSES,
        input_shape=(1, 2, 2),
        class_names=("a", "b", "c"),
    )


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


@pytest.fixture(scope="session")
def blobs() -> Callable[..., Benchmark]:
    """``blobs(with_ood_val=True)`` builds the synthetic benchmark."""
    return make_benchmark
