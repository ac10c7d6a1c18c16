"""The `tradi` console script: help, listing, a small run end to end, and clear refusals."""

from __future__ import annotations

import json
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


def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"digits", "mnist", "mnist-notmnist", "cifar10", "camvid-ood"} <= set(listed)
    assert main(["show", "mnist-notmnist"]) == 0
    assert "weight_decay: 1.0e-2" in capsys.readouterr().out


def test_run_writes_results_and_prints_the_table(
    small_digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    assert "| method | AUROC %" in printed
    assert "| Baseline (MCP) |" in printed and "| TRADI (untuned, scale 1) |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0]
    assert [pair["method"] for pair in results["pairs"]] == ["mcp", "tradi"]
    assert results["command"].startswith("tradi run ")
    assert (out / "report.md").exists() and (out / "results.csv").exists()

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
