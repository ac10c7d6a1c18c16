"""The `tradi` console script: help, listing, a small run end to end, and clear refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tradi.cli import main
from tradi.experiments import config_text


@pytest.fixture
def small_digits(tmp_path: Path) -> Path:
    """The shipped digits config, copied and edited the way a user would: 3 epochs."""
    text, _ = config_text("digits")
    path = tmp_path / "small.yaml"
    path.write_text(text.replace("epochs: 20", "epochs: 3"))
    return path


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for word in ("run", "reproduce", "list", "show", "--resume", "results.json", "report.md"):
        assert word in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    run_help = capsys.readouterr().out
    for option in ("--methods", "--seeds", "--out", "--data-dir", "--resume"):
        assert option in run_help


def test_run_without_arguments_requires_only_the_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["run"])
    error = capsys.readouterr().err
    assert "required: CONFIG_OR_NAME\n" in error and "KEY=VALUE ..." in error  # optional


def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines}
    assert {"digits", "mnist", "mnist-notmnist", "cifar10", "camvid-ood"} <= listed
    # one column for the descriptions, however long the longest name (streethazards-cpu)
    width = max(map(len, listed))
    assert all(line[width : width + 2] == "  " and line[width + 2] != " " for line in lines)
    assert main(["show", "mnist-notmnist"]) == 0
    assert "weight_decay: 1.0e-2" in capsys.readouterr().out


def test_run_writes_results_and_prints_the_table(
    small_digits: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    argv = [
        "run",
        str(small_digits),
        "--methods",
        "mcp",
        "tradi",
        "--seeds",
        "1",
        "--out",
        str(out),
    ]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    # the compact table (the full one is report.md's), within 100 columns
    assert "method" in printed and "AUROC %" in printed and "FPR95 %" in printed
    assert "\nBaseline (MCP) " in printed and "\nTRADI (untuned, scale 1) " in printed
    table = printed.split("\n\n")[0].splitlines()
    assert len(table) >= 3 and max(map(len, table)) <= 100 and "report.md" in printed
    assert "| Baseline (MCP) |" in (out / "report.md").read_text()
    # stdout is no terminal under pytest: the runner's lines per training, no epoch lines
    logged = [(r.name, r.getMessage()) for r in caplog.records]
    assert any(m.startswith("mcp seed 0 done: ") for _, m in logged)
    assert not [m for name, m in logged if name.startswith("tradi.training")]
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0]
    assert [pair["method"] for pair in results["pairs"]] == ["mcp", "tradi"]
    assert results["command"].startswith("tradi run ")
    assert (out / "report.md").exists() and (out / "results.csv").exists()
    history = (out / "state" / "tradi" / "seed_0" / "metrics.csv").read_text().splitlines()
    assert history[0].startswith("run,epoch,lr,train_loss,val_loss") and len(history) == 1 + 3

    # Resuming with other settings is refused; adding a method is not.
    text = small_digits.read_text().replace("epochs: 3", "epochs: 4")
    small_digits.write_text(text)
    assert main([*argv, "--resume", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "no-such-config"], "neither a config file nor a shipped config"),
        (["run", "digits", "--methods", "laplace"], "'laplace' are not in config 'digits'"),
        (["run", "digits", "--seeds", "0"], "--seeds must be >= 1"),
        (["reproduce", "my-config"], "unknown config 'my-config'"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_a_misspelt_key_is_named(small_digits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small_digits.write_text(small_digits.read_text().replace("batch_size: 32", "batchsize: 32"))
    assert main(["run", str(small_digits)]) == 2
    error = capsys.readouterr().err
    assert "'batchsize'" in error and "allowed keys" in error and "batch_size" in error


def test_ctrl_c_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tradi.experiments.run_experiment", interrupted)
    assert main(["run", "digits", "--out", str(tmp_path)]) == 130
    assert f"continue with: tradi run digits --out {tmp_path} --resume" in capsys.readouterr().err
    assert main(["run", "digits", "--resume", "--out", str(tmp_path)]) == 130
    assert f"continue with: tradi run digits --out {tmp_path} --resume" in capsys.readouterr().err


def _tradi(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """``python -m tradi ARGS`` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tradi", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )


def test_version_and_module_entry_point() -> None:
    from tradi import __version__

    done = _tradi("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"tradi {__version__}"
    done = _tradi("--help")
    assert done.returncode == 0 and "usage: tradi" in done.stdout and not done.stderr


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom tradi.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("False")


def test_a_closed_pipe_ends_quietly() -> None:
    """`tradi list | head -1`: the reader is gone before tradi writes; no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        done = _tradi("list", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""


def test_overrides_set_keys_anywhere_on_the_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, object] = {}

    def record(config: object, out: object, **kwargs: object) -> None:
        seen.update(config=config, **kwargs)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr("tradi.experiments.run_experiment", record)
    argv = ["run", "digits", "train.epochs=2", "--out", str(tmp_path), "methods.tradi.n_samples=3"]
    assert main([*argv, "--methods", "mcp", "tradi", "train.lr=1e-3", "seeds=[4, 5]"]) == 130
    config = seen["config"]
    assert list(config.methods) == ["mcp", "tradi"]  # type: ignore[attr-defined]
    assert config.train["epochs"] == 2 and config.train["lr"] == 0.001  # type: ignore[attr-defined]
    assert config.methods["tradi"]["n_samples"] == 3  # type: ignore[attr-defined]
    assert config.seeds == (4, 5)  # type: ignore[attr-defined]
    assert seen["progress"] is False  # stderr is not a terminal under pytest: no bars


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=two", "with train.epochs=two: train.epochs: expected int, got str 'two'"),
        ("train.epoch=2", "unknown key(s) 'epoch' in train"),
        ("methods.tradi.n_sample=2", "unknown key(s) 'n_sample' in methods.tradi"),
        ("train.epochs.x=2", "override 'train.epochs.x=2': train.epochs is a value"),
        ("=2", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_named(
    override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "digits", override]) == 2
    assert message in capsys.readouterr().err


def test_corrupt_data_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Any byte changed gives the checksum message and exit status 2, no traceback."""
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / "mnist").mkdir(exist_ok=True)
        (tmp_path / "mnist" / name).write_bytes(b"\x1f\x8b not the published file")
    argv = ["run", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("tradi: error: checksum mismatch for ")
    assert "--download" in error and error.count("\n") == 1


def test_an_unavailable_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["run", "digits", "device=cuda"]) == 2
    error = capsys.readouterr().err
    assert "device: 'cuda' is not available" in error and "device=cpu" in error
    assert error.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty.yaml is empty: a config needs at least name, benchmark and methods"),
        (
            "name: x\n  bad: [\n",
            'empty.yaml is not valid YAML: mapping values are not allowed here\n  in "',
        ),
        ("name: x\n", "missing required key(s) 'benchmark', 'methods'"),
    ],
)
def test_config_messages_name_the_file_not_python(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "__init__" not in error and "<unicode string>" not in error and ": :" not in error


def test_download_flag_fetches_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradi.data import DatasetNotFoundError

    asked: dict[str, object] = {}

    def offline(name: str, data_dir: object, **kwargs: object) -> None:
        asked.update(name=name, data_dir=data_dir, **kwargs)
        raise DatasetNotFoundError("could not download https://example/x.gz (offline)")

    monkeypatch.setattr("tradi.data.load_benchmark", offline)
    argv = ["run", "mnist", "--download", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert asked["download"] is True and asked["name"] == "mnist"
    assert (
        capsys.readouterr().err
        == "tradi: error: could not download https://example/x.gz (offline)\n"
    )


@pytest.mark.parametrize("rank_zero", [True, False])
def test_warnings_print_on_rank_zero_only(monkeypatch: pytest.MonkeyPatch, rank_zero: bool) -> None:
    """Under --nproc N or torchrun every rank would print each warning: only rank 0 does."""
    import tradi.distributed
    from tradi.cli import _warn_on_rank_zero_only

    monkeypatch.setattr(tradi.distributed, "is_rank_zero", lambda: rank_zero)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_on_rank_zero_only()
        warnings.warn("a method's warning", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == (["a method's warning"] if rank_zero else [])
