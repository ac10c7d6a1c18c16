"""Fixtures shared by every test folder: a local HTTP server; the real datasets, required in CI.

`real_data_dir` is $TRADI_DATA_DIR (the Makefile points it at ../shared/data). A test that uses
it is skipped when the data is absent, unless TRADI_REQUIRE_DATA=1 (set by .ci/run): then a
missing or incomplete data directory fails the test, so CI can never pass without the data.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
