"""Every public name of `tradi.__all__` is in the API reference (docs/api/*.md).

A name counts as documented when a `::: path` directive of an API page resolves to it: the object
itself (`::: tradi.methods.METHODS`), or a package or module whose `__all__` exports that very
object (`::: tradi.inference` documents `tradi.SampledEnsemble`: mkdocstrings renders the members
named in `__all__`, or without one the public names the module defines). Directives name packages rather than modules where they can, so that a module
split inside a package moves no page. That the build renders them is checked on the built site in
test_docs_build.py.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import tradi

API_DIR = Path(__file__).resolve().parents[2] / "docs" / "api"
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def resolve(path: str) -> object:
    """The object a mkdocstrings identifier names: the longest importable module prefix, then
    attributes. Raises ImportError/AttributeError naming the path when nothing resolves."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {path!r}")


def directives() -> dict[str, object]:
    """{identifier: object} of every `::: identifier` line of docs/api/*.md."""
    found = {}
    for page in sorted(API_DIR.glob("*.md")):
        for path in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            found[path] = resolve(path)
    return found


def documents(target: object, name: str, obj: object) -> bool:
    """Whether a directive's ``target`` documents the public object ``obj`` called ``name``."""
    if target is obj and not isinstance(obj, (str, int, float)):
        return True
    if not isinstance(target, ModuleType) or getattr(target, name, None) is not obj:
        return False
    if hasattr(target, "__all__"):
        return name in target.__all__
    # no __all__: mkdocstrings renders the public names the module defines itself
    return not name.startswith("_") and getattr(obj, "__module__", None) == target.__name__


def test_every_directive_resolves() -> None:
    found = directives()
    assert found, f"no '::: ' directives in {API_DIR}"
    assert "tradi.selection" in found  # fit_ensemble, ScaleSelection, ScaleSearch


def test_every_public_name_is_documented() -> None:
    found = directives()
    missing = []
    for name in tradi.__all__:
        obj = getattr(tradi, name)
        direct = f"tradi.{name}" in found or any(
            path.rsplit(".", 1)[-1] == name and target is obj for path, target in found.items()
        )
        if not direct and not any(documents(target, name, obj) for target in found.values()):
            missing.append(name)
    assert not missing, f"tradi.__all__ names missing from docs/api/*.md: {missing}"


def test_the_check_catches_a_missing_name() -> None:
    """The rule above is not vacuous: a package that does not export a name does not count."""
    inference = importlib.import_module("tradi.inference")
    assert documents(inference, "SampledEnsemble", tradi.SampledEnsemble)
    assert not documents(inference, "fit_ensemble", tradi.fit_ensemble)
    assert not documents(importlib.import_module("tradi.tracking"), "METHODS", tradi.METHODS)
