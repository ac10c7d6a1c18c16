"""Tiny synthetic problems shared by the method and training tests: three Gaussian blobs and a
two-layer MLP with BatchNorm and dropout, small enough for a CPU test to train in a blink."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 3
NUM_FEATURES = 4

LoaderMaker = Callable[..., DataLoader]


def _blobs_loader(
    n: int, seed: int, *, shuffle: bool = False, label_shift: int = 0, batch_size: int = 32
) -> DataLoader:
    """``n`` points of three Gaussian blobs in 4-D (class c centred at 2 e_c, unit spread).

    ``label_shift`` relabels class c as c + shift (mod 3): data whose best model is a bad one.
    A shuffling loader gets its own seeded generator, as a resumable run needs.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    inputs = 2.0 * torch.eye(NUM_CLASSES, NUM_FEATURES)[labels] + torch.randn(
        n, NUM_FEATURES, generator=g
    )
    dataset = TensorDataset(inputs, (labels + label_shift) % NUM_CLASSES)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _mlp(dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(
        nn.Linear(NUM_FEATURES, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(16, NUM_CLASSES),
    )


@pytest.fixture
def make_loader() -> LoaderMaker:
    return _blobs_loader


@pytest.fixture
def train_loader() -> DataLoader:
    return _blobs_loader(192, seed=1, shuffle=True)


@pytest.fixture
def val_loader() -> DataLoader:
    return _blobs_loader(96, seed=2)


@pytest.fixture
def model_factory() -> Callable[[], nn.Module]:
    return _mlp


@pytest.fixture
def mlp_with_dropout() -> Callable[[float], Callable[[], nn.Module]]:
    return lambda p: partial(_mlp, p)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and the suite shares two cores between workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
