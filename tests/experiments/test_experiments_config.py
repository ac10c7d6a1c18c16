"""Configs: every shipped one validates; misspelt keys and wrong types are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tradi.experiments import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_names,
    config_text,
    load_config,
)
from tradi.experiments.yaml_text import read_yaml
from tradi.methods import TradiOptions

#: The paper's five configs: the benchmark and network each must run (TRADI.md's tables).
PAPER_CONFIGS = {
    "digits": ("digits", "mlp"),
    "mnist": ("mnist", "lenet5"),
    "mnist-notmnist": ("mnist-notmnist", "mlp"),
    "cifar10": ("cifar10", "resnet20"),
    "camvid-ood": ("camvid-ood", "enet"),
}


def test_the_five_configs_ship_and_validate() -> None:
    names = config_names()
    assert set(PAPER_CONFIGS) <= set(names)
    for name in names:
        assert load_config(name).name == name
    for name, (benchmark, model) in PAPER_CONFIGS.items():
        config = load_config(name)
        assert (config.benchmark, config.model.name) == (benchmark, model), name
        assert {"mcp", "tradi"} <= set(config.methods), name  # the baseline and the method


def test_mnist_notmnist_has_the_papers_recipe() -> None:
    config = load_config("mnist-notmnist")
    train = config.train_config(seed=0)
    assert (train.optimizer, train.lr, train.weight_decay) == ("adam", 1e-3, 1e-2)
    assert (train.scheduler, train.step_size, train.gamma, train.epochs) == ("step", 10, 0.1, 30)
    assert config.data.batch_size == 128
    assert config.model.name == "mlp"
    assert tuple(config.model.options["hidden_features"]) == (200, 200, 200)
    assert list(config.methods) == [
        "mcp",
        "temperature_scaling",
        "gaussian_perturbation",
        "mc_dropout",
        "deep_ensembles",
        "swag",
        "tradi",
        "ivon",
        "tradi_modes",  # beyond the paper (issue 19), labelled so in the tables
    ]


def test_round_trip_through_plain_data(tiny_config: dict[str, Any]) -> None:
    config = config_from_dict(tiny_config)
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config
    options = config.method_options("tradi")
    assert isinstance(options, TradiOptions)
    assert options.scale == "auto"
    assert config.scale_selection.tolerance == 0.2


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("epochs_typo",), 3, ["'epochs_typo'", "allowed keys", "benchmark"]),
        (("data", "batchsize"), 3, ["'batchsize'", "data", "batch_size"]),
        (("methods", "tradi", "sclae"), 3.0, ["'sclae'", "methods.tradi", "scale"]),
        (("model", "options", "width"), 3, ["'width'", "model.options", "hidden_features"]),
        (("train", "momentun"), 0.9, ["'momentun'", "train", "momentum"]),
    ],
)
def test_unknown_keys_are_named(
    tiny_config: dict[str, Any], path: tuple[str, ...], value: Any, expected: list[str]
) -> None:
    section = tiny_config
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(ConfigError) as error:
        config_from_dict(tiny_config)
    for text in expected:
        assert text in str(error.value)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("train", "lr"), "1e-3", ["train.lr", "expected float", "str '1e-3'"]),
        (("train", "epochs"), 2.5, ["train.epochs", "expected int", "float 2.5"]),
        (("train", "optimizer"), "adm", ["train.optimizer", "'adam'", "'adm'"]),
        (("seeds",), [0, "1"], ["seeds[1]", "expected int", "str '1'"]),
        (("methods", "tradi", "n_samples"), True, ["methods.tradi.n_samples", "bool True"]),
        (("model", "options", "dropout"), "high", ["model.options.dropout", "expected float"]),
        (("data",), [1, 2], ["data", "expected a mapping"]),
        (("benchmark",), "svhn", ["benchmark", "'mnist-notmnist'", "'svhn'"]),
    ],
)
def test_ill_typed_values_are_named(
    tiny_config: dict[str, Any], path: tuple[str, ...], value: Any, expected: list[str]
) -> None:
    section = tiny_config
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(ConfigError) as error:
        config_from_dict(tiny_config)
    for text in expected:
        assert text in str(error.value)


def test_values_checked_by_the_options_themselves(tiny_config: dict[str, Any]) -> None:
    tiny_config["methods"]["tradi"]["rank"] = 0
    with pytest.raises(ConfigError, match=r"methods\.tradi: rank must be >= 1"):
        config_from_dict(tiny_config)


def test_runner_owned_keys_and_unknown_methods_are_refused(tiny_config: dict[str, Any]) -> None:
    tiny_config["train"]["seed"] = 3
    with pytest.raises(ConfigError, match=r"train\.seed is set by the runner; use 'seeds'"):
        config_from_dict(tiny_config)
    del tiny_config["train"]["seed"]
    tiny_config["methods"]["laplace"] = {}
    with pytest.raises(ConfigError, match=r"unknown method.*'laplace'.*tradi"):
        config_from_dict(tiny_config)


def test_ints_are_accepted_where_floats_are_expected(tiny_config: dict[str, Any]) -> None:
    tiny_config["train"]["lr"] = 1
    config = config_from_dict(tiny_config)
    assert isinstance(config.train_config(0).lr, float)


def test_config_files_and_bad_names(tmp_path: Any) -> None:
    text, _ = config_text("digits")
    path = tmp_path / "copy.yaml"
    path.write_text(text.replace("epochs: 20", "epochs: 2"))
    assert load_config(path).train["epochs"] == 2
    with pytest.raises(ConfigError, match="neither a config file nor a shipped config"):
        load_config("no-such-config")
    path.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_exponent_without_a_dot_is_a_float(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-3 as a string; configs follow YAML 1.2, where it is a number."""
    text, _ = config_text("digits")
    path = tmp_path / "c.yaml"
    path.write_text(
        text.replace("lr: 1.0e-3", "lr: 1e-3").replace("weight_decay: 1.0e-4", "weight_decay: 1E-4")
    )
    train = load_config(path).train_config(seed=0)
    assert train.lr == 1e-3 and isinstance(train.lr, float) and train.weight_decay == 1e-4
    assert read_yaml("a: 1e3\nb: 12\nc: 1e-3x\nd: '1e-3'", "t") == {
        "a": 1000.0,
        "b": 12,
        "c": "1e-3x",
        "d": "1e-3",  # quoted: still a string
    }


def test_a_dataclass_check_reads_without_a_leading_colon(tmp_path: Path) -> None:
    text, _ = config_text("digits")
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("threads: 1", "threads: 0"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: threads must be >= 1 (or null: torch's default), got 0"


def test_overrides_create_sections_and_leave_the_document_alone() -> None:
    raw = {"train": {"epochs": 3}, "methods": {"mcp": None}}
    changed = apply_overrides(raw, ["train.epochs=5", "methods.mcp.x=[1, 2]", "data.batch_size=8"])
    assert changed == {
        "train": {"epochs": 5},
        "methods": {"mcp": {"x": [1, 2]}},
        "data": {"batch_size": 8},
    }
    assert raw == {"train": {"epochs": 3}, "methods": {"mcp": None}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(raw, ["train.epochs"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides(raw, ["train.epochs=[1"])


def test_a_changed_recipe_is_flagged_beside_the_papers_numbers() -> None:
    from dataclasses import replace

    from tradi.experiments.report import recipe_warning

    paper = load_config("mnist-notmnist")
    assert recipe_warning({"config": paper.to_dict()}) == ""
    # fewer methods, another device or thread count do not change the recipe
    fewer = replace(paper, methods={"tradi": paper.methods["tradi"]}, threads=2)
    assert recipe_warning({"config": fewer.to_dict()}) == ""
    changed = load_config("mnist-notmnist", ["train.epochs=2", "methods.tradi.n_samples=5"])
    warning = recipe_warning({"config": changed.to_dict()})
    assert warning.startswith("**Warning: not the paper's recipe.**")
    assert "train.epochs: 30 -> 2" in warning and "methods.tradi.n_samples: 20 -> 5" in warning
    # no paper table for digits: nothing to warn about
    assert recipe_warning({"config": load_config("digits", ["train.epochs=2"]).to_dict()}) == ""


def test_the_split_modules_keep_every_name_importable() -> None:
    """config.py was split (schema, checks, yaml_text): the names others import stay one object
    wherever they are imported from."""
    import tradi.experiments as face
    from tradi.experiments import checks, config, schema, yaml_text

    for name in ("DataConfig", "ModelConfig", "ScaleSelectionConfig", "ExperimentConfig"):
        assert getattr(face, name) is getattr(config, name) is getattr(schema, name)
    assert face.config_from_dict is config.config_from_dict is schema.config_from_dict
    assert config.parse_dataclass is checks.parse_dataclass
    assert face.apply_overrides is config.apply_overrides is yaml_text.apply_overrides
    assert config.read_yaml is yaml_text.read_yaml
    for name in ("load_config", "config_names", "config_text", "check_device", "select_methods"):
        assert getattr(face, name) is getattr(config, name)
    assert face.recipe_differences is config.recipe_differences
    assert set(config.__all__) <= set(dir(config))
