"""The experiment config's schema: typed dataclasses and the checks that build them from YAML.

`config_from_dict` reads a parsed document section by section (`tradi.experiments.checks`),
so a misspelt key, an ill-typed value or a non-finite number is refused, by its dotted path,
before any data is loaded or any network trained. Reading files and overrides is
`tradi.experiments.config`'s job.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tradi.data import BENCHMARK_NAMES, BenchmarkName
from tradi.data.benchmarks import import_benchmark_factory
from tradi.experiments.checks import check_type, parse_dataclass, refuse_non_finite, refuse_unknown
from tradi.experiments.errors import ConfigError
from tradi.methods import METHODS
from tradi.metrics import OOD_SCORES
from tradi.models import MLP, ENet, LeNet5, ModelName, PSPNet, ResNet20, WideResNet
from tradi.models.factory import import_model_class
from tradi.selection import ScaleSelection
from tradi.training import TrainConfig

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
    operations are too small to split. ``ood_score``: the name of the `tradi.metrics.OOD_SCORES`
    criterion the report's tables and the terminal table show (default ``msp``, the paper's
    MCP, so the shipped tables stay comparable with the paper's); every score the methods'
    outputs allow is computed and written to results.json whatever this says.
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
    ood_score: str = "msp"

    def __post_init__(self) -> None:
        if self.ood_score not in OOD_SCORES:
            raise ValueError(
                f"ood_score: unknown OOD score {self.ood_score!r}; choose one of "
                f"{', '.join(OOD_SCORES)} (docs/ood-scores.md)"
            )
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
        refuse_unknown(model.options, allowed, "model.options")
    for key, value in model.options.items():
        model.options[key] = check_type(value, hints.get(key, Any), f"model.options.{key}")


def _check_train(train: Mapping[str, Any]) -> None:
    for key, instead in _TRAIN_KEYS_SET_BY_RUNNER.items():
        if key in train:
            raise ConfigError(f"train.{key} is set by the runner; use {instead!r} instead")
    parse_dataclass(TrainConfig, train, "train")


def config_from_dict(raw: Any) -> ExperimentConfig:
    """Check a parsed YAML document (mappings, lists, scalars) section by section and build the
    `ExperimentConfig`. Raises `ConfigError` naming the dotted key of the first problem: an
    unknown key or method, an ill-typed value, a NaN or infinity anywhere (`refuse_non_finite`,
    before the typed checks, so a key typed ``Any`` is covered too)."""
    refuse_non_finite(raw)
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


__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ScaleSelectionConfig",
    "config_from_dict",
]
