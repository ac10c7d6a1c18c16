"""The one checker every config section goes through: parsed YAML against a typed dataclass.

A config a user copied and edited must fail before any training when a key is misspelt, a value
has the wrong type or a number is not finite, with a message naming the key (its dotted path),
what was expected and what was found. `parse_dataclass` serves the experiment's dataclasses
(`tradi.experiments.schema`) and those of the training and methods packages, so every section
of a file follows the same rules; `refuse_non_finite` checks the whole document at once,
including the sections typed ``Any`` (a user model's options).

Why by hand: the checks must speak in the config's dotted paths and accept what YAML writes
(lists for tuples, ints for floats, a one-key ``Literal``); pydantic or cattrs would add a
dependency to the core and reword every message, for the ~100 lines below.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args

from tradi.experiments.errors import ConfigError

T = TypeVar("T")


def parse_dataclass(cls: type[T], mapping: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``mapping``, refusing unknown keys and ill-typed values.

    ``where`` is the dotted path of the section, used in messages. Lists become tuples where the
    field is a tuple; ints are accepted for floats, NaN and infinities nowhere; the dataclass's
    own checks run last and their message is prefixed with ``where``. Raises `ConfigError`.
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {describe(mapping)}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    refuse_unknown(mapping, allowed, where)
    values = {
        key: check_type(value, hints[key], join(where, key)) for key, value in mapping.items()
    }
    missing = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init
        and f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        section = f" in {where}" if where else ""
        raise ConfigError(f"missing required key(s) {', '.join(map(repr, missing))}{section}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from error


def join(where: str, key: Any) -> str:
    """The dotted path of ``key`` inside the section at ``where`` ("" is the top level)."""
    return f"{where}.{key}" if where else str(key)


def refuse_unknown(mapping: Mapping[str, Any], allowed: list[str], where: str) -> None:
    """Raise `ConfigError` naming the keys of ``mapping`` not in ``allowed``, and the allowed."""
    unknown = [str(key) for key in mapping if key not in allowed]
    if unknown:
        section = f" in {where}" if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))}{section}; allowed keys: "
            f"{', '.join(allowed)}"
        )


def describe(value: Any) -> str:
    """A found value for a message: its type and its repr (``str '1e-3'``)."""
    return f"{type(value).__name__} {value!r}"


def refuse_non_finite(value: Any, where: str = "") -> None:
    """Raise `ConfigError` at the first NaN or infinity anywhere in the parsed document
    ``value`` (mappings and lists are searched), naming its dotted path (``train.lr``,
    ``seeds[1]``). No setting of tradi takes an infinite value (checked field by field: the
    one limit that can be lifted, ``methods.ivon.clip_radius``, is lifted by null), so a
    non-finite number is always a mistake, and one that would surface only after a NaN epoch."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"{where or 'the config'}: expected a finite number, got {value}; NaN and "
            "infinities are refused everywhere (where a key allows null, null lifts its limit)"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            refuse_non_finite(item, join(where, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            refuse_non_finite(item, f"{where}[{i}]")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, get_args(hint)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    if hint is type(None):
        return "null"
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(hint)[0])}"
    if origin in (dict, Mapping):
        return "a mapping"
    if hint is float:
        return "float (finite)"
    return getattr(hint, "__name__", str(hint))


def check_type(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to ``hint`` (YAML list -> tuple, int -> float), or a ConfigError
    naming ``key``, the expected type and the value found. A float must be finite."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return parse_dataclass(hint, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        if value in get_args(hint) and type(value) in {type(arg) for arg in get_args(hint)}:
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in get_args(hint):
            try:
                return check_type(value, arg, key)
            except ConfigError:
                continue
    elif origin in (tuple, list, Sequence) or hint in (tuple, list):
        if isinstance(value, (list, tuple)):
            return _check_items(value, hint, key)
    elif origin in (dict, Mapping) or hint is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint in (int, str, bool):
        if type(value) is hint:
            return value
    else:
        raise ConfigError(f"{key}: cannot check values of type {hint!r}")
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {describe(value)}")


def _check_items(value: list[Any] | tuple[Any, ...], hint: Any, key: str) -> Any:
    """The items of a YAML list checked against ``hint``'s item type (``tuple[int, ...]``,
    ``list[float]``); a tuple unless ``hint`` is a list."""
    args = get_args(hint)
    items = (
        [check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        if args and (len(args) == 1 or args[-1] is Ellipsis)
        else list(value)
    )
    return tuple(items) if typing.get_origin(hint) is not list else items


__all__ = [
    "check_type",
    "describe",
    "join",
    "parse_dataclass",
    "refuse_non_finite",
    "refuse_unknown",
]
