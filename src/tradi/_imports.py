"""Imports by name: objects named by import path in configs (LightningCLI's ``class_path``), and
the package faces' names imported on first use (PEP 562)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def import_object(path: str, what: str) -> Any:
    """The object at ``package.module.name``; ValueError naming ``what`` and the failure."""
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"cannot import {what} {path!r} ({type(error).__name__}: {error}); the package must "
            "be installed or on PYTHONPATH"
        ) from error


def lazy_names(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``'s face: each name of ``names`` (name ->
    module) is imported from its module on first use and then kept in the package, so later
    look-ups skip ``__getattr__``. AttributeError for any other name."""

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
