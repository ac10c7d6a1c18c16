"""The folder one test session's pytest-xdist workers share for runs made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Under xdist, the session's folder above the workers' own; without it, the session's own
    (the parent would then be shared with every other pytest session on the machine)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
