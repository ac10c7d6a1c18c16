"""The base install (issue 20, item 10): without the optional package ivon-opt, a config's ivon
row is skipped with one warning naming the install command and the other methods run; asking
for ivon by name (``--methods ivon``, or a config of ivon alone) is an error saying how to
install it. ``sys.modules["ivon"] = None`` makes ``import ivon`` fail as on a base install."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from tradi.cli import main
from tradi.experiments import ConfigError, config_text, load_config, select_methods

INSTALL = 'pip install -e ".[ivon]"'


@pytest.fixture
def no_ivon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ivon", None)


def test_the_digits_ivon_row_is_skipped_with_one_warning(no_ivon: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config("digits")
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "\n" not in message and message.startswith("method ivon skipped: ")
    assert "ivon-opt" in message and INSTALL in message
    assert caught[0].filename == __file__  # points at the caller's line, not tradi's
    shipped = list(yaml.safe_load(config_text("digits")[0])["methods"])
    assert "ivon" in shipped and list(config.methods) == [m for m in shipped if m != "ivon"]
    assert select_methods(config, None) is config


@pytest.mark.parametrize("asked", [["ivon"], ["mcp", "ivon"]])
def test_ivon_asked_for_by_name_is_an_error(no_ivon: None, asked: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = load_config("digits")
    with pytest.raises(ConfigError, match="method ivon was asked for by name") as info:
        select_methods(config, asked)
    assert INSTALL in str(info.value)


def test_a_config_of_ivon_alone_is_an_error(no_ivon: None, tmp_path: Path) -> None:
    path = tmp_path / "ivon.yaml"
    path.write_text("name: only\nbenchmark: digits\nmethods:\n  ivon: {n_samples: 4}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: methods: ivon cannot run here: the optional")
    assert INSTALL in str(info.value)


def test_with_ivon_installed_nothing_is_skipped() -> None:
    pytest.importorskip("ivon")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config("digits")
    assert "ivon" in config.methods
    assert list(select_methods(config, ["ivon"]).methods) == ["ivon"]


def test_the_cli_refuses_methods_ivon_with_exit_2(
    no_ivon: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["run", "digits", "--methods", "ivon", "--out", str(tmp_path / "r")])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("tradi: error: method ivon was asked for by name") and INSTALL in error
    assert not (tmp_path / "r").exists()


def test_the_cli_runs_the_other_methods(no_ivon: None, tmp_path: Path) -> None:
    """The issue's case, small: a digits copy with mcp and ivon, one epoch, no --methods."""
    text, _ = config_text("digits")
    head = text[: text.index("methods:\n")]
    path = tmp_path / "small.yaml"
    path.write_text(head + "methods:\n  mcp: {}\n  ivon: {n_samples: 2}\nseeds: [0]\n")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"method ivon skipped: .*ivon-opt") as caught:
        status = main(["run", str(path), "train.epochs=1", "--out", str(out), "--no-progress"])
    assert status == 0
    assert sum("ivon" in str(w.message) for w in caught) == 1
    results = json.loads((out / "results.json").read_text())
    assert list(results["config"]["methods"]) == ["mcp"]
    assert list(results["summary"]) == ["mcp"]
