"""One output folder, one run: a live run's lock refuses a second run (naming the holder), a dead
run's lock is taken over, a finished run is never deleted without overwrite, and a resume with
other settings names each setting that differs."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import tradi.training.loop as loop
from tradi.cli import main
from tradi.data import Benchmark
from tradi.experiments import (
    ConfigError,
    OutputFolderError,
    config_from_dict,
    config_text,
    run_experiment,
)
from tradi.experiments.rundir import LOCK_NAME, lock_out_dir, setting_differences

# Holds the folder's lock until its stdin closes (no timing: the test reads "locked" first).
HOLDER = """\
import sys
from pathlib import Path
from tradi.experiments.rundir import lock_out_dir
with lock_out_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``tmp_path/out``'s lock (the test may kill it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None and process.stdout.readline() == "locked\n"
    yield process
    if process.poll() is None:
        assert process.stdin is not None
        process.stdin.close()
    process.wait(timeout=600)  # a limit that only catches a hang


def _one_method(tiny_config: dict[str, Any], **train: Any) -> Any:
    tiny_config["methods"] = {"mcp": {}}
    tiny_config["seeds"] = [0]
    tiny_config["train"].update(epochs=1, **train)
    return config_from_dict(tiny_config)


def test_a_live_run_holds_the_folder_and_is_named(
    holder: subprocess.Popen[str],
    tmp_path: Path,
    tiny_config: dict[str, Any],
    blobs: Callable[..., Benchmark],
) -> None:
    out = tmp_path / "out"
    held = json.loads((out / LOCK_NAME).read_text())
    assert held["pid"] == holder.pid and held["host"] and held["started"]
    assert LOCK_NAME not in held["command"] and "-c" in held["command"]
    with pytest.raises(OutputFolderError) as refused:
        run_experiment(_one_method(tiny_config), out, benchmark=blobs(), progress=False)
    message = str(refused.value)
    assert f"{out} is in use by another run (pid {holder.pid} on " in message
    assert "another --out" in message
    assert isinstance(refused.value, ConfigError)  # the CLI: `tradi: error: ...`, exit 2
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written, nothing lost
    # the same with resume: a live run is never resumed under its feet
    with pytest.raises(OutputFolderError, match="is in use by another run"):
        run_experiment(
            _one_method(tiny_config), out, benchmark=blobs(), progress=False, resume=True
        )

    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=600) == 0
    assert not (out / LOCK_NAME).exists()  # released and removed
    results = run_experiment(_one_method(tiny_config), out, benchmark=blobs(), progress=False)
    assert [pair["method"] for pair in results["pairs"]] == ["mcp"]
    assert not (out / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over(
    holder: subprocess.Popen[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    holder.send_signal(signal.SIGKILL)  # no cleanup: the file stays, the OS drops the flock
    holder.wait(timeout=600)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="tradi"), lock_out_dir(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the lock of a run that ended without releasing it" in caplog.text
    assert f"pid {holder.pid} on " in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """flock locks belong to open files: the same process cannot take the folder twice."""
    refused = pytest.raises(OutputFolderError, match=f"pid {os.getpid()}")
    with lock_out_dir(tmp_path), refused, lock_out_dir(tmp_path):
        pass
    with lock_out_dir(tmp_path):  # released by the outer block
        pass


def test_a_finished_run_is_kept_unless_overwritten(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    config = _one_method(tiny_config)
    first = run_experiment(config, tmp_path, benchmark=blobs(), progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(OutputFolderError) as refused:
        run_experiment(_one_method(tiny_config, lr=0.02), tmp_path, benchmark=blobs())
    message = str(refused.value)
    assert str(tmp_path) in message and "results.json" in message and "state" in message
    assert "--resume" in message and "--overwrite" in message and "another --out" in message
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # untouched

    with pytest.raises(OutputFolderError, match="exclude each other"):
        run_experiment(config, tmp_path, benchmark=blobs(), resume=True, overwrite=True)
    # resuming the finished run reads it back: the same results, nothing retrained
    again = run_experiment(config, tmp_path, benchmark=blobs(), progress=False, resume=True)
    assert again["pairs"] == first["pairs"]

    other = run_experiment(
        _one_method(tiny_config, lr=0.02),
        tmp_path,
        benchmark=blobs(),
        progress=False,
        overwrite=True,
    )
    assert other["config"]["train"]["lr"] == 0.02
    assert other["pairs"][0]["final_val"] != first["pairs"][0]["final_val"]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only tradi's own files go


def test_a_folder_with_only_a_config_is_no_run(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    """A run stopped before any epoch ended left nothing to lose: a new run may start there."""
    (tmp_path / "config.yaml").write_text("name: something else\n")
    results = run_experiment(_one_method(tiny_config), tmp_path, benchmark=blobs(), progress=False)
    assert results["pairs"][0]["method"] == "mcp"


def test_a_resume_with_other_settings_names_them(
    tmp_path: Path, tiny_config: dict[str, Any], blobs: Callable[..., Benchmark]
) -> None:
    run_experiment(_one_method(tiny_config), tmp_path, benchmark=blobs(), progress=False)
    changed = _one_method(tiny_config, lr=0.02, momentum=0.5)
    with pytest.raises(OutputFolderError) as refused:
        run_experiment(changed, tmp_path, benchmark=blobs(), progress=False, resume=True)
    message = str(refused.value)
    assert "train.lr: 0.01 -> 0.02; train.momentum: 0.9 -> 0.5" in message
    assert "seeds and methods may be added" in message and "--overwrite" in message

    (tmp_path / "config.yaml").write_text("{not: yaml: at all")
    with pytest.raises(OutputFolderError, match=re.escape(f"{tmp_path / 'config.yaml'} cannot")):
        run_experiment(changed, tmp_path, benchmark=blobs(), progress=False, resume=True)


def test_setting_differences_compare_resolved_settings(tiny_config: dict[str, Any]) -> None:
    before = config_from_dict(tiny_config)
    same = dict(tiny_config, train={**tiny_config["train"], "momentum": 0.9, "gamma": 0.1})
    # defaults written out equal defaults left out; name, description and seeds are free
    same.update(name="renamed", description="other words", seeds=[0, 1, 2, 3])
    assert setting_differences(before, config_from_dict(same)) == []
    # methods added or dropped are free; the shared ones' options are compared
    tiny_config["methods"] = {
        "tradi": {**tiny_config["methods"]["tradi"], "n_samples": 5},
        "swag": {"n_samples": 3},
    }
    tiny_config["data"]["batch_size"] = 16
    tiny_config["model"]["options"]["hidden_features"] = [8]
    assert setting_differences(before, config_from_dict(tiny_config)) == [
        "data.batch_size: 32 -> 16",
        "methods.tradi.n_samples: 4 -> 5",
        "model.options.hidden_features: [16, 16] -> [8]",
    ]


def test_adding_seeds_and_methods_on_resume_extends_the_run(
    tmp_path: Path,
    tiny_config: dict[str, Any],
    blobs: Callable[..., Benchmark],
) -> None:
    first = run_experiment(_one_method(tiny_config), tmp_path, benchmark=blobs(), progress=False)
    tiny_config["seeds"] = [0, 1]
    tiny_config["methods"] = {"mcp": {}, "temperature_scaling": {}}
    extended = run_experiment(
        config_from_dict(tiny_config), tmp_path, benchmark=blobs(), progress=False, resume=True
    )
    pairs = {(p["method"], p["seed"]): p for p in extended["pairs"]}
    assert sorted(pairs) == [
        ("mcp", 0),
        ("mcp", 1),
        ("temperature_scaling", 0),
        ("temperature_scaling", 1),
    ]
    assert pairs["mcp", 0] == first["pairs"][0]  # read back, not retrained


def test_the_cli_names_a_damaged_checkpoint_and_an_occupied_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through `tradi run`: a run killed after its first checkpoint, that checkpoint truncated
    (no previous one to fall back to); a run without --resume is refused and keeps it, a
    resume names the file: one `tradi: error:` line each, exit status 2."""
    raw = yaml.safe_load(config_text("digits")[0])
    raw.update(methods={"mcp": {}}, seeds=[0])
    raw["train"]["epochs"] = 2
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    argv = ["run", str(config), "--out", str(out), "--no-progress"]
    real_save = loop.save_atomic

    def save_then_die(state: dict[str, Any], path: Path) -> None:
        real_save(state, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_atomic", save_then_die)
    assert main(argv) == 130
    monkeypatch.undo()
    checkpoint = out / "state" / "shared" / "seed_0" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()

    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"tradi: error: {out} holds another run (state)")
    assert checkpoint.exists()
    assert main([*argv, "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"tradi: error: cannot resume from the checkpoint in {checkpoint.parent}"
    )
    assert "checkpoint.pt: not a complete checkpoint" in error and "delete checkpoint.pt" in error
    assert "Traceback" not in error
