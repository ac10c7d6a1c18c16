"""CLI latency (issue 21): the wall time of `tradi list` and of `tradi run no-such-config`, each
a fresh interpreter as a user starts it, median of `RUNS` runs after one warm-up (file cache).

The goal is under 1 s each on an idle machine: neither imports torch, torchmetrics or scipy
(tests/experiments/test_cli_fast.py checks the module set; this measures the time). Python's own
start (`python -c pass`) is measured in the same rounds, interleaved, as the floor: on a busy
machine compare the CLI's times to it, not to a fixed number.
Measured on 2 shared cores at load ~9, interleaved, median of 5 (/tmp one-off, same method):
before (1c84d03) list 10.6 s, run no-such-config 10.6 s; after 0.27 s and 0.26 s (python -c
pass: 0.04 s).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Result

RUNS = 5
SRC = Path(__file__).resolve().parent.parent / "src"
COMMANDS = {
    "list": ["-m", "tradi", "list"],
    "run_unknown_config": ["-m", "tradi", "run", "no-such-config"],
    "python_start": ["-c", "pass"],
}


def _seconds(arguments: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one ``python ARGUMENTS`` in a fresh process (output discarded)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=300,
    )
    return time.perf_counter() - start


def cli_latency() -> Result:
    # this checkout's source first, as `make bench` from the repository root would import it
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    for arguments in COMMANDS.values():  # warm-up: the file cache, .pyc files
        _seconds(arguments, env)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(RUNS):  # interleaved rounds: each command sees the same load
        for name, arguments in COMMANDS.items():
            times[name].append(_seconds(arguments, env))
    result: Result = {f"{name}_s": round(statistics.median(t), 3) for name, t in times.items()}
    result["runs"] = RUNS
    result["goal_s"] = 1.0
    return result


BENCHMARKS: dict[str, Callable[[], Result]] = {"cli_latency": cli_latency}
