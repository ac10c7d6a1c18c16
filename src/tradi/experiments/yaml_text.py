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
    """PyYAML's safe loader with YAML 1.2 floats (``1e-3`` is the number 0.001, not a string:
    YAML 1.1, which PyYAML follows, needs a dot, ``1.0e-3``) that refuses a key written twice
    in one mapping (``lr`` twice in ``train:``, or two ``train:`` sections), which PyYAML
    accepts, keeping the last value silently. The YAML spec requires keys to be unique.

    The refusal is PyYAML's usual recipe, placed in ``flatten_mapping``: every mapping passes
    there first (``construct_mapping`` calls it, and it calls itself on the mappings merged in
    with ``<<``) while it still holds only the keys its text wrote; a key that overrides a
    merged ``<<`` key is YAML's merge, not a duplicate.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()
        self._root: yaml.Node | None = None

    def construct_document(self, node: yaml.Node) -> Any:
        self._root = node  # to name a duplicate's dotted path
        return super().construct_document(node)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._refuse_duplicates(node)
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node)
            if key in first:
                path = _path_to(self._root, node, "") if self._root is not None else None
                where = f"{path}.{key}" if path else str(key)
                raise ConfigError(
                    f"{self.name}: duplicate key {where!r} at line {key_node.start_mark.line + 1} "
                    f"(first at line {first[key].start_mark.line + 1}); a key may appear once "
                    "per section (YAML would keep the last value silently): keep one"
                )
            first[key] = key_node


_MERGE = "tag:yaml.org,2002:merge"


def _path_to(
    node: yaml.Node, target: yaml.Node, where: str, seen: set[int] | None = None
) -> str | None:
    """The dotted path (``train``, ``methods.tradi``, ``seeds[1]``) of ``target`` below
    ``node`` ("" for ``node`` itself), None when it is not there."""
    if node is target:
        return where
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias met again
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [(f"{where}.{k.value}" if where else str(k.value), v) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(f"{where}[{i}]", v) for i, v in enumerate(node.value)]
    else:
        return None
    for path, child in children:
        if (found := _path_to(child, target, path, seen)) is not None:
            return found
    return None


_Loader.add_implicit_resolver(  # only what YAML 1.1 leaves a string: an exponent, no dot
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (with YAML 1.2 floats) into plain data. Raises `ConfigError` naming
    ``source`` and the line of a syntax error, or the dotted path and lines of a key written
    twice in one mapping (at any depth)."""
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
    misspelt key, an ill-typed value or a NaN is refused with its name. Raises `ConfigError` for
    an override without ``=``, a ``KEY`` given twice (which one was meant?), a duplicate key
    inside a ``VALUE`` or a path through a value that is not a section.
    """
    document: dict[str, Any] = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    given: dict[str, str] = {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.epochs=2")
        if key in given:
            raise ConfigError(f"override {override!r}: {key} is already set by {given[key]!r}")
        given[key] = override
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
