"""Config text to data: YAML with YAML 1.2 floats, and Hydra-style ``KEY=VALUE`` overrides."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Sequence
from typing import Any

import yaml

from tradi.experiments.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` is the number 0.001, not a string
    (YAML 1.1, which PyYAML follows, needs a dot: ``1.0e-3``)."""


_Loader.add_implicit_resolver(  # only what YAML 1.1 leaves a string: an exponent, no dot
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (with YAML 1.2 floats); errors name ``source`` and the line."""
    stream = io.StringIO(text)
    stream.name = source  # type: ignore[misc]  # what PyYAML's messages call the input
    try:
        return yaml.load(stream, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {error}") from error


def apply_overrides(raw: Any, overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the parsed document ``raw`` with ``KEY=VALUE`` overrides set (Hydra style).

    ``KEY`` is a dotted path (``train.epochs``, ``methods.tradi.n_samples``); missing
    sections on the way are created. ``VALUE`` is read as YAML (``2``, ``1e-3``, ``null``,
    ``[0, 1, 2]``). The result is checked like the file afterwards (`config_from_dict`), so a
    misspelt key or an ill-typed value is refused with its name. Raises `ConfigError` for an
    override without ``=`` or a path through a value that is not a section.
    """
    document: dict[str, Any] = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.epochs=2")
        *sections, last = key.split(".")
        node = document
        for depth, part in enumerate(sections):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(sections[: depth + 1])
                raise ConfigError(f"override {override!r}: {path} is a value, not a section")
            node = child
        node[last] = read_yaml(text, f"the value of override {override!r}")
    return document
