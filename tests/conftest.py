"""Fixtures shared by every test folder: the real datasets, required in CI.

`real_data_dir` is $TRADI_DATA_DIR (the Makefile points it at ../shared/data). A test that uses
it is skipped when the data is absent, unless TRADI_REQUIRE_DATA=1 (set by .ci/run): then a
missing or incomplete data directory fails the test, so CI can never pass without the data.
"""

from __future__ import annotations

import os
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
