"""Bad numbers and bad YAML (issue 20, item 9): a key written twice and a NaN or infinity are
refused by their dotted path before any training, in files, in overrides and in the values of
overrides; the spellings tested are checked to be what the test means (non-finite under the
project's YAML reader, duplicate under PyYAML's plain one)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tradi.cli import main
from tradi.experiments import ConfigError, apply_overrides, config_from_dict, config_text
from tradi.experiments import load_config as load_from_face
from tradi.experiments.checks import parse_dataclass
from tradi.experiments.config import load_config
from tradi.experiments.yaml_text import read_yaml
from tradi.training import TrainConfig

#: Every YAML spelling of a non-finite float PyYAML knows, plus exponents past float64's range
#: (read as numbers by the YAML 1.2 rule of `read_yaml`).
NON_FINITE = [".inf", "-.inf", "+.inf", ".Inf", "-.INF", ".nan", ".NaN", ".NAN", "1e999", "-1e999"]

#: Every float field of the shipped schema (found by listing the dataclasses' float hints:
#: data, train, scale_selection, each method's options, the models' dropout), where it sits in
#: a config; none of them legitimately takes an infinity (a lifted limit is null).
FLOAT_KEYS = [
    "data.val_fraction",
    "train.lr",
    "train.momentum",
    "train.weight_decay",
    "train.gamma",
    "scale_selection.tolerance",
    "scale_selection.low",
    "scale_selection.high",
    "methods.tradi.scale",
    "methods.tradi.init_variance",
    "methods.tradi.q_mean",
    "methods.tradi.r_mean",
    "methods.tradi.q_var",
    "methods.tradi.r_var",
    "methods.gaussian_perturbation.scale",
    "methods.swag.scale",
    "methods.swag.swa_lr",
    "methods.ivon.lr",
    "methods.ivon.ess",
    "methods.ivon.hess_init",
    "methods.ivon.beta1",
    "methods.ivon.beta2",
    "methods.ivon.weight_decay",
    "methods.ivon.clip_radius",
    "methods.ivon.scale",
    "model.options.dropout",
]


@pytest.mark.parametrize("spelling", NON_FINITE)
def test_the_spellings_are_non_finite_numbers(spelling: str) -> None:
    value = read_yaml(f"x: {spelling}", "t")["x"]
    assert isinstance(value, float) and not math.isfinite(value)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_field_refuses_nan_and_infinity_by_its_dotted_path(key: str) -> None:
    for spelling in (".inf", "-.inf", ".nan"):
        with pytest.raises(ConfigError) as info:
            load_config("digits", [f"{key}={spelling}"])
        assert f"{key}: expected a finite number" in str(info.value)


@pytest.mark.parametrize("spelling", NON_FINITE)
def test_a_non_finite_number_in_a_file_is_refused(tmp_path: Path, spelling: str) -> None:
    text, _ = config_text("digits")
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("lr: 1.0e-3", f"lr: {spelling}"))
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lr: expected a finite number"):
        load_config(path)


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("model.options.hidden_features", "[64, .nan]", "model.options.hidden_features[1]"),
        ("seeds", "[0, .NaN]", "seeds[1]"),
        ("data.image_size", "[.inf, 4]", "data.image_size[0]"),
        ("methods.tradi.extra", "{deep: [1, {x: -.inf}]}", "methods.tradi.extra.deep[1].x"),
    ],
)
def test_a_nan_inside_a_list_or_an_unchecked_section_is_named(
    key: str, value: str, where: str
) -> None:
    """The walk runs before the typed checks: ``methods.tradi.extra`` is an unknown key, but
    the non-finite number inside is what is reported first, by its full path."""
    with pytest.raises(ConfigError, match=re.escape(f"{where}: expected a finite number")):
        load_config("digits", [f"{key}={value}"])


def test_a_user_models_any_typed_option_is_covered(tiny_config: dict[str, Any]) -> None:
    tiny_config["model"] = {"class_path": "torch.nn.Identity", "init_args": {"x": [1.0, math.nan]}}
    with pytest.raises(ConfigError, match=r"model\.init_args\.x\[1\]: expected a finite number"):
        config_from_dict(tiny_config)


def test_nan_from_python_and_from_the_cli(
    tiny_config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_config["train"]["lr"] = math.inf
    with pytest.raises(ConfigError, match=r"^train\.lr: expected a finite number, got inf"):
        config_from_dict(tiny_config)
    with pytest.raises(ConfigError, match=r"^train\.lr: expected float \(finite\), got float nan"):
        parse_dataclass(TrainConfig, {"lr": math.nan}, "train")
    # the case: exit 2 with the key named, before anything is written or trained
    assert main(["run", "digits", "train.lr=.nan", "--out", str(tmp_path / "run")]) == 2
    assert "train.lr: expected a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_finite_numbers_and_null_still_pass() -> None:
    config = load_config(
        "digits", ["train.lr=1e-3", "scale_selection.high=null", "methods.tradi.scale=1e300"]
    )
    assert config.train["lr"] == 1e-3 and config.scale_selection.high is None
    assert load_from_face is load_config  # the package face and the module: one function


DUPLICATES = [
    ("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "train.lr", 4, 2),
    ("train:\n  lr: 0.1\nseeds: [0]\ntrain:\n  lr: 0.2\n", "train", 4, 1),
    ("methods:\n  tradi:\n    n_samples: 3\n    n_samples: 4\n", "methods.tradi.n_samples", 4, 3),
    (
        "model:\n  options:\n    layers:\n      - {a: 1}\n      - {b: 1, b: 2}\n",
        "model.options.layers[1].b",
        5,
        5,
    ),
    ("a: {x: 1, 'x': 2}\n", "a.x", 1, 1),  # quoting does not make another key
]


@pytest.mark.parametrize(("text", "path", "line", "first"), DUPLICATES)
def test_a_duplicate_key_is_refused_with_its_path_and_lines(
    text: str, path: str, line: int, first: int
) -> None:
    plain = yaml.safe_load(text)  # what PyYAML alone does: the last value wins, silently
    assert plain is not None
    with pytest.raises(ConfigError) as info:
        read_yaml(text, "c.yaml")
    message = str(info.value)
    assert message.startswith(f"c.yaml: duplicate key {path!r} at line {line} ")
    assert f"(first at line {first})" in message


def test_a_duplicate_in_a_config_file_stops_load_config(tmp_path: Path) -> None:
    text, _ = config_text("digits")
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("  lr: 1.0e-3\n", "  lr: 1.0e-3\n  lr: 0.5\n"))
    first = text.splitlines().index("  lr: 1.0e-3") + 1
    expected = f"{path}: duplicate key 'train.lr' at line {first + 1} (first at line {first})"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path)


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = "base: &b {lr: 0.1, epochs: 2}\ntrain:\n  <<: *b\n  lr: 0.5\n"
    assert read_yaml(text, "t")["train"] == {"lr": 0.5, "epochs": 2}
    nested = "a: &a {x: 1}\nb: &b {<<: *a, x: 2}\nc: {<<: *b, x: 3}\n"
    assert read_yaml(nested, "t") == {"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}}


def test_overrides_refuse_duplicates_in_values_and_keys_given_twice() -> None:
    with pytest.raises(ConfigError, match=r"value of override .*duplicate key 'lr'"):
        apply_overrides({}, ["train={lr: 1, lr: 2}"])
    with pytest.raises(ConfigError, match=r"duplicate key 'x\.y'"):
        apply_overrides({}, ["methods.tradi.extra={x: {y: 1, y: 2}}"])
    with pytest.raises(ConfigError, match=r"'train\.lr=2': train\.lr is already set by 'train"):
        apply_overrides({}, ["train.lr=1", "train.lr=2"])
    # a section and one of its keys are two settings, not a duplicate
    assert apply_overrides({}, ["train={lr: 1}", "train.epochs=2"]) == {
        "train": {"lr": 1, "epochs": 2}
    }


def test_every_shipped_config_is_free_of_duplicates() -> None:
    from tradi.experiments import config_names

    for name in config_names():
        text, source = config_text(name)
        assert isinstance(read_yaml(text, source), dict)  # read by the refusing loader
