"""Fixtures shared by every test folder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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
