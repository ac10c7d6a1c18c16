"""One prepared GPU check of tradi (issue 23; docs/gpu.md): correctness on the device, the
checks only an accelerator can tell apart, tracker and ensemble timings, and the CLI end to end.

    python benchmarks/gpu_check.py                      # on a GPU machine: < 8 minutes
    python benchmarks/gpu_check.py --smoke --device cpu # everything tiny, ~15 s on a CPU

Needs only the repository (synthetic data and the embedded digits). Writes JSON to `--out`
(default benchmarks/results_gpu.json) after every check, so a run stopped halfway keeps what it
measured. Exit status 0 when every check passed or was skipped with a reason, else 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # the repository's tradi, installed or not

from benchmarks import gpu_numerics, gpu_timing  # noqa: E402

Result = dict[str, Any]
#: seconds a full run may take in all; a check that would start with less than its estimate left
#: is skipped (recorded as such), so the run ends inside an 8-minute device slot
BUDGET_S = 450.0


def _cli(args: list[str], timeout: float) -> Result:
    """`python -m tradi ARGS` in a subprocess with the repository's sources first on the path."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "tradi", "run", *args, "--out", out]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        results = Path(out) / "results.json"
        ok = done.returncode == 0 and results.is_file()
        summary: Result = {"command": " ".join(command[1:-2]), "returncode": done.returncode}
        if ok:
            summary["methods"] = sorted(_methods(json.loads(results.read_text())))
        else:
            summary["stderr_tail"] = done.stderr[-2000:]
        return {"passed": ok, **summary}


def _methods(results: Any) -> set[str]:
    """Method names found anywhere in a results.json (its layout is the runner's business)."""
    found: set[str] = set()
    if isinstance(results, dict):
        for key, value in results.items():
            if key == "method" and isinstance(value, str):
                found.add(value)
            found |= _methods(value)
    elif isinstance(results, list):
        for value in results:
            found |= _methods(value)
    return found


def check_cli_digits(device: torch.device, smoke: bool) -> Result:
    """`tradi run digits device=...` with a short override set, end to end."""
    overrides = [f"device={device.type}", "seeds=[0]", "threads=null"]
    if smoke:
        return _cli(["digits", *overrides, "train.epochs=1", "--methods", "mcp", "tradi"], 120)
    # every method of the config; IVON only where its optional package is installed
    methods = ["mcp", "temperature_scaling", "gaussian_perturbation", "mc_dropout"]
    methods += ["deep_ensembles", "swag", "tradi"]
    methods += ["ivon"] if importlib.util.find_spec("ivon") is not None else []
    return _cli(["digits", *overrides, "train.epochs=2", "--methods", *methods], 240)


def check_camvid(device: torch.device, smoke: bool) -> Result:
    """One epoch of camvid-ood end to end if the data is present; else skipped: no data."""
    data = Path(os.environ.get("TRADI_DATA_DIR", ROOT.parent / "shared" / "data")) / "camvid"
    if smoke:
        return {"passed": None, "skipped": "smoke mode (an epoch of ENet takes 15-30 s on a CPU)"}
    if not data.is_dir():
        return {"passed": None, "skipped": f"no data ({data} absent)"}
    args = ["camvid-ood", f"device={device.type}", "train.epochs=1", "seeds=[0]", "threads=null"]
    return _cli([*args, "--methods", "mcp", "tradi"], 240)


def check_segmentation_loop(device: torch.device, smoke: bool) -> Result:
    """Synthetic segmentation batches through the training loop with TRADI (ENet, void pixels
    ignored), then its predictive: finite probabilities summing to 1 per pixel."""
    from tradi import build_method
    from tradi.models import ENet

    n, size = (2, (32, 32)) if smoke else (8, (90, 120))
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(2 * n, 3, *size, generator=gen)
    labels = torch.randint(0, 4, (2 * n, *size), generator=gen)
    labels[:, 0] = 255
    loader = list(zip(inputs.split(n), labels.split(n), strict=True))
    train = {"epochs": 2, "optimizer": "adam", "lr": 1e-3, "device": str(device), "progress": False}
    method = build_method(
        "tradi",
        lambda: ENet(num_classes=4),
        train=train,
        loss_fn=torch.nn.CrossEntropyLoss(ignore_index=255),
        scale=1.0,
        n_samples=3,
    )
    method.fit(loader, loader)
    probs = method.predict(loader)
    mean = probs.mean(0)
    err = float((mean.sum(1) - 1).abs().max())
    ok = bool(torch.isfinite(probs).all()) and tuple(mean.shape) == (2 * n, 4, *size) and err < 1e-4
    return {"passed": ok, "shape": list(probs.shape), "max_sum_error": err}


def _tf32(enabled: bool) -> None:
    """TF32 off for the correctness checks (comparisons at float32 precision); torch's
    defaults back for the timings (what users run)."""
    torch.backends.cuda.matmul.allow_tf32 = False if not enabled else DEFAULT_TF32[0]
    torch.backends.cudnn.allow_tf32 = False if not enabled else DEFAULT_TF32[1]


DEFAULT_TF32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def checks(device: torch.device, smoke: bool) -> list[tuple[str, float, Callable[[], Result]]]:
    """(name, estimated seconds on a GPU, function) in the order they run."""
    steps = 8 if smoke else 60
    return [
        ("tracker_reference", 20, lambda: gpu_numerics.check_tracker(device, steps)),
        ("device_paths", 5, lambda: gpu_numerics.check_device_paths(device)),
        ("scale0_ensemble", 10, lambda: gpu_numerics.check_scale0_ensemble(device)),
        ("metrics_on_device", 5, lambda: gpu_numerics.check_metrics_on_device(device)),
        ("batching_auto", 5, lambda: gpu_numerics.check_batching_auto(device)),
        ("segmentation_loop", 30, lambda: check_segmentation_loop(device, smoke)),
        ("timings", 120, lambda: (_tf32(True), gpu_timing.check_timings(device, smoke))[1]),
        ("cli_digits", 150, lambda: check_cli_digits(device, smoke)),
        ("camvid_epoch", 150, lambda: check_camvid(device, smoke)),
    ]


def _write(result: Result, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def run(device: torch.device, smoke: bool, out: Path, budget: float) -> Result:
    """Run every check in order, writing the JSON after each; returns the result."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    result: Result = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "smoke": smoke,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checks": {},
    }
    started = time.perf_counter()
    _tf32(False)
    for check, estimate, fn in checks(device, smoke):
        left = budget - (time.perf_counter() - started)
        if not smoke and left < estimate:
            result["checks"][check] = {
                "passed": None,
                "skipped": f"out of time ({left:.0f} s left)",
            }
            continue
        began = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the checks' own early-posterior warnings
                outcome = fn()
        except Exception as error:  # one failing check must not lose the others
            outcome = {"passed": False, "error": repr(error), "traceback": traceback.format_exc()}
        outcome["seconds"] = round(time.perf_counter() - began, 3)
        result["checks"][check] = outcome
        print(
            f"{check}: {'skipped' if outcome['passed'] is None else outcome['passed']} ({outcome['seconds']} s)"
        )
        _write(result, out)
    result["passed"] = all(c["passed"] is not False for c in result["checks"].values())
    result["seconds"] = round(time.perf_counter() - started, 1)
    _write(result, out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="everything tiny (CPU test)")
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help=f"default: {default}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_gpu.json")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="skip checks past it")
    args = parser.parse_args(argv)
    result = run(torch.device(args.device), args.smoke, args.out, args.budget_s)
    print(f"{'passed' if result['passed'] else 'FAILED'} in {result['seconds']} s: {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
