"""Fixtures shared by every test folder: a local HTTP server; the real datasets, required in CI;
a synthetic benchmark (three Gaussian blobs) small enough to train every method in seconds.

`real_data_dir` is $TRADI_DATA_DIR (the Makefile points it at ../shared/data). A test that uses
it is skipped when the data is absent, unless TRADI_REQUIRE_DATA=1 (set by .ci/run): then a
missing or incomplete data directory fails the test, so CI can never pass without the data.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import tradi
from tradi.data import Benchmark, TensorSplit

#: The datasets the real-data tests read, as folders of $TRADI_DATA_DIR.
REAL_DATASETS = ("mnist", "fashion_mnist", "notmnist", "cifar10", "camvid")


def missing_datasets(root: str | None) -> list[str]:
    """Why the real data cannot be used: the variable unset, or the dataset folders absent."""
    if not root:
        return ["TRADI_DATA_DIR is not set"]
    return [f"{root}/{name}" for name in REAL_DATASETS if not (Path(root) / name).is_dir()]


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    root = os.environ.get("TRADI_DATA_DIR")
    missing = missing_datasets(root)
    if missing:
        message = f"real datasets absent ({', '.join(missing)}): set TRADI_DATA_DIR to the shared data directory"
        if os.environ.get("TRADI_REQUIRE_DATA") == "1":
            pytest.fail(f"TRADI_REQUIRE_DATA=1 but {message}", pytrace=False)
        pytest.skip(message)
    assert root is not None
    return Path(root)


@pytest.fixture
def serve() -> Iterator[dict[str, bytes]]:
    """A local HTTP server (no internet needed): put bytes at ``files[path]``; its base URL
    is ``files["base"]``."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    files["base"] = f"http://127.0.0.1:{server.server_address[1]}/".encode()
    yield files
    server.shutdown()
    server.server_close()


def _blobs(n: int, seed: int, shift: float = 0.0) -> TensorSplit:
    """Three Gaussian blobs in 4-D shaped as 1x2x2 images; ``shift`` moves every point away
    from all blobs (the OOD sets)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = 2.5 * torch.eye(3, 4)[labels] + shift
    x = centres + torch.randn(n, 4, generator=generator)
    return TensorSplit(x.reshape(n, 1, 2, 2), labels)


def make_benchmark(
    with_ood_val: bool = True, ood_shift: float = -3.0, far_ood_shift: float | None = None
) -> Benchmark:
    """The blobs benchmark: 240/90/150 train/val/test points, 120 OOD test points (and 90 OOD
    validation, 100 far-OOD points when asked), each split from its own seed."""
    return Benchmark(
        name="blobs",
        task="classification",
        train=_blobs(240, 1),
        val=_blobs(90, 2),
        test=_blobs(150, 3),
        ood_test=_blobs(120, 4, shift=ood_shift),
        ood_val=_blobs(90, 5, shift=ood_shift) if with_ood_val else None,
        num_classes=3,
        input_shape=(1, 2, 2),
        class_names=("a", "b", "c"),
        far_ood_test=None if far_ood_shift is None else _blobs(100, 6, shift=far_ood_shift),
    )


@pytest.fixture(scope="session")
def blobs() -> Callable[..., Benchmark]:
    """``blobs(with_ood_val=True, ood_shift=-3.0, far_ood_shift=None)`` builds the synthetic
    benchmark."""
    return make_benchmark


def _train_tracked(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    memory: int = 4,
) -> tradi.WeightTracker:
    """SGD (lr 0.1) with cross-entropy over ``batches`` for ``epochs``, a tracker updated after
    every step; the tracker (``model`` is trained in place)."""
    tracker = tradi.WeightTracker(model, memory=memory)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        for xb, yb in batches:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            tracker.update()
    return tracker


@pytest.fixture(scope="session")
def train_tracked() -> Callable[..., tradi.WeightTracker]:
    """``train_tracked(model, batches, epochs, memory=4)``: a tiny tracked SGD training."""
    return _train_tracked
