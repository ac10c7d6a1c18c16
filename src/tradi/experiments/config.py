"""Experiment configs: YAML files checked key by key against typed dataclasses.

A config a user copied and edited must fail before any training when a key is misspelt or a
value has the wrong type, with a message naming the key, what was expected and what was found.
One checker (`parse_dataclass`) serves this module's dataclasses and those of the training and
methods packages, so every section of a file follows the same rules.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from tradi.data import BENCHMARK_NAMES, BenchmarkName
from tradi.data.benchmarks import import_benchmark_factory
from tradi.experiments.errors import ConfigError
from tradi.experiments.yaml_text import apply_overrides, read_yaml
from tradi.methods import METHODS
from tradi.models import MLP, ENet, LeNet5, ModelName, PSPNet, ResNet20, WideResNet
from tradi.models.factory import import_model_class
from tradi.selection import ScaleSelection
from tradi.training import TrainConfig

T = TypeVar("T")

#: Arguments the benchmark decides (class count, input shape); a config may not set them.
_SET_BY_BENCHMARK = frozenset({"self", "num_classes", "in_features", "in_channels", "input_size"})
_MODEL_CLASSES: dict[str, type] = {
    "mlp": MLP,
    "lenet5": LeNet5,
    "resnet20": ResNet20,
    "wrn28_10": WideResNet,
    "enet": ENet,
    "pspnet": PSPNet,
}
#: TrainConfig fields the runner sets itself (per seed, from the top-level ``device``, the CLI).
_TRAIN_KEYS_SET_BY_RUNNER = {"seed": "seeds", "device": "device", "progress": "--no-progress"}


@dataclass(frozen=True)
class DataConfig:
    """How the benchmark is split and batched. ``split_seed`` fixes the validation split for
    every seed, so seeds differ by training randomness only. ``image_size`` [H, W] resizes the
    anomaly benchmarks' images (streethazards, bdd-anomaly) as they are read."""

    val_fraction: float = 0.1
    split_seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 1000
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None and (
            len(self.image_size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.image_size)
            or min(self.image_size) < 1
        ):
            raise ValueError(
                f"image_size must be [height, width], two integers >= 1, got {self.image_size}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """An architecture of `tradi.models` and its keyword options (input and class count come
    from the benchmark), or your own ``nn.Module`` class by import path.

    Your own model, LightningCLI style: ``model: {class_path: mypkg.nets.MyNet, init_args:
    {width: 64}}`` (stored as ``name`` and ``options``). Its constructor gets ``init_args``
    plus whichever of ``num_classes``, ``in_channels``, ``in_features``, ``input_shape`` it
    accepts (`tradi.models.build_model`).
    """

    name: ModelName | str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScaleSelectionConfig(ScaleSelection):
    """How a noise scale set to ``auto`` in a method's options is chosen on validation data:
    `tradi.selection.ScaleSelection`'s fields (rule, tolerance, iterations, low, high; the
    default rule needs no OOD data; rule ``ood_auroc`` reads the benchmark's declared
    ``ood_val`` set, never the OOD test set). ``report_untuned`` adds a row at the method's
    untuned default scale."""

    report_untuned: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: a benchmark, a model, the shared training recipe and the methods compared.

    ``benchmark`` is a name of `tradi.data.load_benchmark` or the import path of your own
    function returning a `tradi.data.Benchmark` (``benchmark: {class_path: mypkg.data.make}``
    is read the same). ``methods`` maps a method name of `tradi.methods.METHODS` to its options, in table order.
    Every method trains once per seed in ``seeds`` with ``train`` (a `TrainConfig` without
    ``seed``/``device``/``progress``, which the runner sets). ``threads`` sets torch's CPU
    threads for the run (null: torch's default); one thread is fastest for tiny models, whose
    operations are too small to split.
    """

    name: str
    benchmark: BenchmarkName | str
    methods: dict[str, Any]
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    scale_selection: ScaleSelectionConfig = field(default_factory=ScaleSelectionConfig)
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or null: torch's default), got {self.threads}")
        if not self.methods:
            raise ValueError("methods is empty: name at least one method")
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")

    def train_config(self, seed: int, progress: bool = True) -> TrainConfig:
        """The shared recipe for one seed."""
        settings = {**self.train, "seed": seed, "device": self.device, "progress": progress}
        return parse_dataclass(TrainConfig, settings, "train")

    def method_options(self, name: str) -> Any:
        """The typed options dataclass of method ``name`` (checked at load time)."""
        return parse_dataclass(METHODS[name].options_type, self.methods[name], f"methods.{name}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, scalars) that `config_from_dict` reads back unchanged."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def parse_dataclass(cls: type[T], mapping: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``mapping``, refusing unknown keys and ill-typed values.

    ``where`` is the dotted path of the section, used in messages. Lists become tuples where the
    field is a tuple; ints are accepted for floats; the dataclass's own checks run last and
    their message is prefixed with ``where``.
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_describe(mapping)}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    _refuse_unknown(mapping, allowed, where)
    values = {
        key: check_type(value, hints[key], _join(where, key)) for key, value in mapping.items()
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


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _refuse_unknown(mapping: Mapping[str, Any], allowed: list[str], where: str) -> None:
    unknown = [str(key) for key in mapping if key not in allowed]
    if unknown:
        section = f" in {where}" if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))}{section}; allowed keys: "
            f"{', '.join(allowed)}"
        )


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


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
    return getattr(hint, "__name__", str(hint))


def check_type(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to ``hint`` (YAML list -> tuple, int -> float), or a ConfigError
    naming ``key``, the expected type and the value found."""
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
            args = get_args(hint)
            items = (
                [check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
                if args and (len(args) == 1 or args[-1] is Ellipsis)
                else list(value)
            )
            return tuple(items) if origin is not list else items
    elif origin in (dict, Mapping) or hint is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint in (int, str, bool):
        if type(value) is hint:
            return value
    else:
        raise ConfigError(f"{key}: cannot check values of type {hint!r}")
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {_describe(value)}")


def _model_class(name: str) -> type:
    if name in _MODEL_CLASSES:
        return _MODEL_CLASSES[name]
    if "." not in name:
        raise ConfigError(
            f"model.name: unknown model {name!r}; choose one of {', '.join(_MODEL_CLASSES)}, "
            "or give your own class as model.class_path: package.module.Class"
        )
    try:
        return import_model_class(name)
    except ValueError as error:
        raise ConfigError(f"model.class_path: {error}") from error


def _check_benchmark(name: str) -> None:
    if name in BENCHMARK_NAMES:
        return
    if "." not in name:
        raise ConfigError(
            f"benchmark: unknown benchmark {name!r}; choose one of {', '.join(map(repr, BENCHMARK_NAMES))}, "
            "or give your own function as package.module.function"
        )
    try:
        import_benchmark_factory(name)
    except ValueError as error:
        raise ConfigError(f"benchmark: {error}") from error


def _lightning_style(raw: Any) -> Any:
    """``model: {class_path, init_args}`` (LightningCLI's keys) as ``{name, options}``, and
    ``benchmark: {class_path}`` as the path itself."""
    bench = raw.get("benchmark") if isinstance(raw, Mapping) else None
    if isinstance(bench, Mapping) and "class_path" in bench:
        if set(bench) != {"class_path"}:
            raise ConfigError(
                "benchmark: only class_path is read (your function gets data_dir, val_fraction "
                "and seed); bind other arguments in your module, e.g. with functools.partial"
            )
        raw = {**raw, "benchmark": bench["class_path"]}
    model = raw.get("model") if isinstance(raw, Mapping) else None
    if not isinstance(model, Mapping) or "class_path" not in model:
        return raw
    clash = [key for key in ("name", "options") if key in model]
    if clash:
        raise ConfigError(f"model: give class_path and init_args, or name and options, not {clash}")
    unknown = [k for k in model if k not in ("class_path", "init_args")]
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in model; with class_path: init_args")
    options = model.get("init_args") or {}
    return {**raw, "model": {"name": model["class_path"], "options": options}}


def _check_model_options(model: ModelConfig) -> None:
    """Refuse unknown or ill-typed architecture options before a model is ever built."""
    init = _model_class(model.name).__init__
    try:
        hints = typing.get_type_hints(init)
    except (NameError, TypeError):  # a user model's unresolvable annotation: values unchecked
        hints = {}
    parameters = inspect.signature(init).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        named = (p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL)
        allowed = [n for n in named if n not in _SET_BY_BENCHMARK]
        _refuse_unknown(model.options, allowed, "model.options")
    for key, value in model.options.items():
        model.options[key] = check_type(value, hints.get(key, Any), f"model.options.{key}")


def _check_train(train: Mapping[str, Any]) -> None:
    for key, instead in _TRAIN_KEYS_SET_BY_RUNNER.items():
        if key in train:
            raise ConfigError(f"train.{key} is set by the runner; use {instead!r} instead")
    parse_dataclass(TrainConfig, train, "train")


def config_from_dict(raw: Any) -> ExperimentConfig:
    """Check a parsed YAML document section by section and build the `ExperimentConfig`."""
    config = parse_dataclass(ExperimentConfig, _lightning_style(raw), "")
    _check_benchmark(config.benchmark)
    _check_model_options(config.model)
    _check_train(config.train)
    unknown = [name for name in config.methods if name not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(map(repr, unknown))} in methods; "
            f"allowed: {', '.join(METHODS)}"
        )
    for name in config.methods:
        config.method_options(name)
    return config


def config_names() -> list[str]:
    """The configs shipped with the package (`tradi run NAME`)."""
    folder = resources.files("tradi.experiments") / "configs"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def config_text(name_or_path: str | Path) -> tuple[str, str]:
    """The YAML text of a shipped config name or a file path, and where it came from."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path.read_text(), str(path)
    if str(name_or_path) not in config_names():
        raise ConfigError(
            f"{name_or_path!r} is neither a config file nor a shipped config; shipped: "
            f"{', '.join(config_names())}"
        )
    resource = resources.files("tradi.experiments") / "configs" / f"{name_or_path}.yaml"
    return resource.read_text(), f"tradi/experiments/configs/{name_or_path}.yaml"


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
    shipped = load_config(benchmark).to_dict()
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
            for change in _changed(before.get(key), after.get(key), _join(where, key))
        ]
    return [] if before == after else [(where, before, after)]


def _short(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def load_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read and check a config: a shipped name (``digits``, ``mnist-notmnist``, ...) or a path,
    with ``KEY=VALUE`` ``overrides`` (`apply_overrides`). Raises `ConfigError` naming the file
    and line of a YAML syntax error, or the key and the problem of an invalid config."""
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
        return config_from_dict(raw)
    except ConfigError as error:
        changed = f" with {' '.join(overrides)}" if overrides else ""
        raise ConfigError(f"{source}{changed}: {error}") from error


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
    "parse_dataclass",
    "read_yaml",
    "recipe_differences",
]
