"""Your own model and benchmark in a config by import path (LightningCLI's class_path /
init_args), here both defined in this test module, trained end to end by the runner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tradi.data import Benchmark, load_benchmark
from tradi.experiments import ConfigError, config_from_dict, config_text, run_experiment
from tradi.experiments.yaml_text import read_yaml


class TinyNet(nn.Module):
    """A user's network: its constructor takes what the benchmark decides plus its own options."""

    def __init__(self, in_features: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def small_digits(data_dir: object, val_fraction: float, seed: int) -> Benchmark:
    """A user's benchmark function: digits with every third training image."""
    bench = load_benchmark("digits", None, val_fraction, seed)
    keep = torch.arange(0, len(bench.train), 3)
    return dataclasses.replace(bench, name="small-digits", train=bench.train.subset(keep))


def _raw(model: object) -> dict:
    raw = read_yaml(config_text("digits")[0], "digits")
    return {**raw, "model": model, "methods": {"mcp": {}}, "seeds": [0], "train": {"epochs": 1}}


def test_a_model_and_benchmark_of_a_test_module_run_by_class_path(tmp_path: Path) -> None:
    path = f"{TinyNet.__module__}.TinyNet"
    bench_path = f"{TinyNet.__module__}.small_digits"
    raw = _raw({"class_path": path, "init_args": {"width": 5}})
    train = {"epochs": 10, "optimizer": "adam", "lr": 0.01}
    config = config_from_dict({**raw, "benchmark": {"class_path": bench_path}, "train": train})
    assert (config.model.name, config.model.options) == (path, {"width": 5})
    assert config.benchmark == bench_path
    results = run_experiment(config, tmp_path, progress=False)
    assert results["benchmark"]["train"] == len(small_digits(None, 0.15, 0).train)
    assert results["pairs"][0]["rows"][0]["metrics"]["accuracy"] > 0.5  # 5 classes
    saved = json.loads((tmp_path / "results.json").read_text())["config"]
    assert saved["model"] == {"name": path, "options": {"width": 5}}  # reloads as written
    assert config_from_dict(saved) == config


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"class_path": "no_such_package.Net"}, "cannot import model 'no_such_package.Net'"),
        ({"class_path": "collections.OrderedDict"}, "is not an nn.Module subclass"),
        ({"class_path": f"{__name__}.TinyNet", "init_args": {"depth": 2}}, "'depth'"),
        ({"class_path": f"{__name__}.TinyNet", "init_args": {"width": "x"}}, "expected int"),
        ({"class_path": f"{__name__}.TinyNet", "name": "mlp"}, "not ['name']"),
        ({"name": "mpl"}, "unknown model 'mpl'"),
    ],
)
def test_bad_model_paths_are_named(model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        config_from_dict(_raw(model))


@pytest.mark.parametrize(
    ("benchmark", "message"),
    [
        ("mnsit", "unknown benchmark 'mnsit'"),
        ("no_such_package.make", "cannot import benchmark 'no_such_package.make'"),
        ({"class_path": f"{__name__}.small_digits", "init_args": {}}, "only class_path is read"),
    ],
)
def test_bad_benchmark_paths_are_named(benchmark: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**_raw({"name": "mlp"}), "benchmark": benchmark})
