"""tradi's benchmarks: `make bench` runs them all and writes one JSON result file.

Speed is only ever quoted as a ratio measured side by side in one process, interleaved
(with vs. without tracking, ensemble vs. single model), because this machine is noisy.
Each `benchmarks/bench_*.py` module exposes `BENCHMARKS: dict[name, () -> dict]`; this runner
collects them all, so adding a benchmark never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tradi  # noqa: E402
from benchmarks.common import Result  # noqa: E402


def collect() -> dict[str, Callable[[], Result]]:
    found: dict[str, Callable[[], Result]] = {}
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        found.update(module.BENCHMARKS)
    return found


def main() -> None:
    benchmarks = collect()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--only", nargs="*", choices=sorted(benchmarks), help="run only these")
    args = parser.parse_args()
    results: dict[str, Result] = {}
    for name in args.only or benchmarks:
        print(f"[bench] {name} ...", flush=True)
        results[name] = benchmarks[name]()
        print(json.dumps(results[name], indent=2), flush=True)
    report = {
        "tradi": tradi.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
