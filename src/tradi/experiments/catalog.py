"""The shipped experiment configs by name, read without torch.

`tradi list`, `tradi show` and the name check of `tradi run` answer from the YAML files packaged
in ``tradi/experiments/configs`` (`importlib.resources`), so a mistyped name is refused in a
fraction of a second instead of after importing torch, torchmetrics and scipy (issue 21). Only
the standard library and PyYAML are imported here; the typed check of a config's keys
(`tradi.experiments.config.load_config`) needs the model, method and training classes, hence torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tradi.experiments.errors import ConfigError
from tradi.experiments.yaml_text import apply_overrides, read_yaml


def config_names() -> list[str]:
    """The configs shipped with the package (`tradi run NAME`), sorted by name."""
    folder = resources.files("tradi.experiments") / "configs"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def config_text(name_or_path: str | Path) -> tuple[str, str]:
    """The YAML text of a shipped config name or a file path, and where it came from (the path,
    or ``tradi/experiments/configs/NAME.yaml``).

    A name ending in ``.yaml``/``.yml`` or naming an existing path is read as a file. Raises
    `ConfigError` for a file that does not exist or a name that is neither a file nor shipped
    (the message lists the shipped names).
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path.read_text(), str(path)
    names = config_names()
    if str(name_or_path) not in names:
        raise ConfigError(
            f"{name_or_path!r} is neither a config file nor a shipped config; shipped: "
            f"{', '.join(names)}"
        )
    resource = resources.files("tradi.experiments") / "configs" / f"{name_or_path}.yaml"
    return resource.read_text(), f"tradi/experiments/configs/{name_or_path}.yaml"


def config_description(name_or_path: str | Path) -> str:
    """The ``description`` of a config ("" when it has none), read from its YAML alone.

    Raises `ConfigError` as `config_text` does, or naming the file and line of a YAML error.
    """
    text, source = config_text(name_or_path)
    raw = read_yaml(text, source)
    description = raw.get("description") if isinstance(raw, dict) else None
    return str(description) if description is not None else ""


def config_listing() -> str:
    """What `tradi list` prints: one line per shipped config, its name and its description in
    one column, newline-terminated."""
    names = config_names()
    width = max(map(len, names), default=0)
    return "".join(f"{name:{width}s}  {config_description(name)}\n" for name in names)


def read_raw_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A config's YAML document with ``KEY=VALUE`` ``overrides`` applied, before any typed check.

    What can be checked without torch is checked here: that the name or file exists, that the
    YAML parses, that each override is ``KEY=VALUE`` with a YAML value and a path through
    sections. Raises `ConfigError` naming the file, line or override. The keys and their types
    are checked afterwards by `tradi.experiments.config.config_from_dict`.
    """
    text, source = config_text(name_or_path)
    raw = read_yaml(text, source)
    return apply_overrides(raw, overrides) if overrides else raw


__all__ = ["config_description", "config_listing", "config_names", "config_text", "read_raw_config"]
