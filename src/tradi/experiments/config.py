"""Finding and reading experiment configs: shipped names or files, ``KEY=VALUE`` overrides, the
methods a run can use here, and how a run's recipe departs from the shipped one.

The schema (`ExperimentConfig` and its sections) and its checks live in
`tradi.experiments.schema` and `tradi.experiments.checks`, the YAML reading in
`tradi.experiments.yaml_text`; their public names are importable from here too, as before the
split, and from `tradi.experiments`.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tradi.experiments.catalog import config_names, config_text
from tradi.experiments.checks import join, parse_dataclass
from tradi.experiments.errors import ConfigError
from tradi.experiments.schema import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    ScaleSelectionConfig,
    config_from_dict,
)
from tradi.experiments.yaml_text import apply_overrides, read_yaml

#: Methods that need an optional package: method -> (module it imports, pip extra, package).
#: ivon-opt is GPLv3+ and tradi MIT, so it stays an extra. The check lives here, where a run's
#: methods are chosen, because `tradi.methods.ivon` imports the package only when an IVON
#: network is trained, after the other methods of the run have trained.
_OPTIONAL_METHODS: dict[str, tuple[str, str, str]] = {"ivon": ("ivon", "ivon", "ivon-opt")}


def check_device(device: str) -> None:
    """Raise `ConfigError` unless torch can use ``device`` here (``cpu``, ``cuda``, ``cuda:1``,
    ``mps``), saying what to set instead; called before any data is loaded."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"device: {device!r} is not a torch device ({error})") from error
    instead = "set `device: cpu` in the config or add device=cpu to the command"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support" if torch.version.cuda is None else "sees no CUDA GPU"
            raise ConfigError(
                f"device: {device!r} is not available: this torch {torch.__version__} {build}; "
                + instead
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {device!r} is not available: {torch.cuda.device_count()} GPU(s) seen"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {device!r} is not available on this machine; " + instead)


def missing_package(method: str) -> str | None:
    """None when ``method`` can run here; otherwise why not, with the command that installs the
    optional package it needs (ivon: ivon-opt, ``pip install -e ".[ivon]"``)."""
    if method not in _OPTIONAL_METHODS:
        return None
    module, extra, package = _OPTIONAL_METHODS[method]
    try:
        importlib.import_module(module)
    except ImportError:
        return (
            f"the optional package {package} is not installed; add it with: "
            f'pip install -e ".[{extra}]" (or pip install {package})'
        )
    return None


def select_methods(config: ExperimentConfig, methods: Sequence[str] | None) -> ExperimentConfig:
    """The config restricted to ``methods`` (in the config's order); None or empty: all of them.

    Raises `ConfigError` for a name the config lacks, and for a method asked for by name whose
    optional package is missing (`missing_package`): an explicit request is never skipped.
    """
    if not methods:
        return config
    for method in methods:
        if why := missing_package(method):
            raise ConfigError(f"method {method} was asked for by name, but {why}")
    unknown = [m for m in methods if m not in config.methods]
    if unknown:
        raise ConfigError(
            f"method(s) {', '.join(map(repr, unknown))} are not in config {config.name!r}; "
            f"it has {', '.join(config.methods)}"
        )
    return replace(config, methods={k: v for k, v in config.methods.items() if k in methods})


def _runnable(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` less the methods whose optional package is missing, each skipped with one
    warning line that names it and the install command; `ConfigError` if that leaves none (a
    config of IVON alone asks for IVON: it is not skipped)."""
    missing = {m: why for m in config.methods if (why := missing_package(m))}
    if not missing:
        return config
    if len(missing) == len(config.methods):
        why = "; ".join(f"{m} cannot run here: {text}" for m, text in missing.items())
        raise ConfigError(f"methods: {why}")
    for method, why in missing.items():
        warnings.warn(f"method {method} skipped: {why}", stacklevel=3)
    return replace(config, methods={k: v for k, v in config.methods.items() if k not in missing})


def load_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config to run: a shipped name (``digits``, ``mnist-notmnist``, ...) or a path, with
    ``KEY=VALUE`` ``overrides`` (`apply_overrides`), less the methods whose optional package is
    missing here (each skipped with a UserWarning naming the install command; ivon without
    ivon-opt). Raises `ConfigError` naming the file and line of a YAML syntax error or a
    duplicate key, the dotted key and the problem of an invalid config (a NaN or infinity
    included), or the install command when no method of the config can run here."""
    config, source = _read_config(name_or_path, overrides)
    try:
        return _runnable(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from error


def _read_config(
    name_or_path: str | Path, overrides: Sequence[str] = ()
) -> tuple[ExperimentConfig, str]:
    """`load_config` with every method of the file, runnable here or not, and its source."""
    text, source = config_text(name_or_path)
    raw = read_yaml(text, source)
    if raw is None and not overrides:
        raise ConfigError(
            f"{source} is empty: a config needs at least name, benchmark and methods "
            "(`tradi show digits` prints a complete one)"
        )
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return config_from_dict(raw), source
    except ConfigError as error:
        changed = f" with {' '.join(overrides)}" if overrides else ""
        raise ConfigError(f"{source}{changed}: {error}") from error


#: Settings that change where or how fast a run goes, not what it computes.
_NOT_RECIPE = frozenset({"name", "description", "device", "threads", "data.eval_batch_size"})


def recipe_differences(config: Mapping[str, Any]) -> list[str]:
    """How ``config`` (an `ExperimentConfig.to_dict`) departs from the shipped config of its
    benchmark, whose recipe the paper's numbers are compared against: one ``"key: shipped ->
    this run"`` line per setting, in dotted paths (fewer methods is not a change; another
    device or thread count neither). Empty when the recipe is the shipped one or no shipped
    config has that benchmark's name."""
    benchmark = config.get("benchmark")
    if benchmark not in config_names():
        return []
    shipped = _read_config(benchmark)[0].to_dict()
    shipped["methods"] = {k: v for k, v in shipped["methods"].items() if k in config["methods"]}
    return [
        f"{key}: {_short(before)} -> {_short(after)}"
        for key, before, after in _changed(shipped, dict(config), "")
        if key not in _NOT_RECIPE
    ]


def _changed(before: Any, after: Any, where: str) -> list[tuple[str, Any, Any]]:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        keys = [*before, *(k for k in after if k not in before)]
        return [
            change
            for key in keys
            for change in _changed(before.get(key), after.get(key), join(where, key))
        ]
    return [] if before == after else [(where, before, after)]


def _short(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ScaleSelectionConfig",
    "apply_overrides",
    "check_device",
    "config_from_dict",
    "config_names",
    "config_text",
    "load_config",
    "missing_package",
    "parse_dataclass",
    "read_yaml",
    "recipe_differences",
    "select_methods",
]
