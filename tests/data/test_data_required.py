"""CI cannot pass without the real data: .ci/run refuses a missing ../shared/data, and under
TRADI_REQUIRE_DATA=1 a real-data test fails instead of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REAL_TEST = "tests/data/test_data_real.py::test_mnist_counts_and_values"


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TRADI_REQUIRE_DATA"}
    environment.update(TRADI_DATA_DIR=str(tmp_path / "absent"), **env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            REAL_TEST,
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_data_skips_locally_and_fails_when_required(tmp_path: Path) -> None:
    skipped = _pytest(tmp_path)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    required = _pytest(tmp_path, TRADI_REQUIRE_DATA="1")
    assert required.returncode == 1, required.stdout
    assert "TRADI_REQUIRE_DATA=1 but real datasets absent" in required.stdout
    assert f"{tmp_path / 'absent'}/mnist" in required.stdout


def test_ci_script_refuses_a_clone_without_shared_data(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", clone / ".ci" / "run")
    (clone / "Makefile").write_text("test:\n\techo MAKE-RAN\n")
    result = subprocess.run(["bash", str(clone / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 1 and "MAKE-RAN" not in result.stdout
    assert f"{tmp_path}/shared/data" in result.stderr
    (tmp_path / "shared" / "data").mkdir(parents=True)
    result = subprocess.run(["bash", str(clone / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 0 and "MAKE-RAN" in result.stdout
