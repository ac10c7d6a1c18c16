"""Objects named by import path in configs (LightningCLI's ``class_path``)."""

from __future__ import annotations

import importlib
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
