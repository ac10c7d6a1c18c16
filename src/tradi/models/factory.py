"""One constructor for every architecture, keyed by name, so configs and the CLI name models."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, Literal, get_args

from torch import nn

from tradi._imports import import_object
from tradi.models.enet import ENet
from tradi.models.lenet import LeNet5
from tradi.models.mlp import MLP
from tradi.models.pspnet import PSPNet
from tradi.models.resnet import ResNet20, WideResNet

ModelName = Literal["mlp", "lenet5", "resnet20", "wrn28_10", "enet", "pspnet"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)

# The input each architecture was published for; used when no input_shape is given.
DEFAULT_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "mlp": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "resnet20": (3, 32, 32),
    "wrn28_10": (3, 32, 32),
    "enet": (3, 90, 120),
    "pspnet": (3, 473, 473),  # PSPNet's training crops (Zhao et al. 2017)
}

_BUILDERS: dict[str, Callable[[int, tuple[int, ...], dict[str, Any]], nn.Module]] = {
    "mlp": lambda classes, shape, kw: MLP(math.prod(shape), classes, **kw),
    "lenet5": lambda classes, shape, kw: LeNet5(classes, shape[0], shape[-1], **kw),
    "resnet20": lambda classes, shape, kw: ResNet20(classes, shape[0], **kw),
    "wrn28_10": lambda classes, shape, kw: WideResNet(classes, shape[0], **kw),
    "enet": lambda classes, shape, kw: ENet(classes, shape[0], **kw),
    "pspnet": lambda classes, shape, kw: PSPNet(classes, shape[0], **kw),
}


def build_model(
    name: ModelName | str,
    num_classes: int,
    input_shape: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``name`` for ``num_classes`` outputs and inputs of shape ``input_shape`` (C, H, W).

    ``input_shape`` sets the MLP's in_features (C * H * W), the conv nets' in_channels and
    LeNet-5's padding; a ``Benchmark.input_shape`` fits directly. ``kwargs`` go to the
    architecture (e.g. ``dropout``, ``hidden_features``, ``depth``, ``width``).
    ``name`` may also be the import path of your own ``nn.Module`` class (``mypkg.nets.MyNet``):
    it is called with ``kwargs`` plus, for each of these parameters its constructor has,
    ``num_classes``, ``in_channels`` (C), ``in_features`` (C * H * W) and ``input_shape``.
    Raises ValueError for an unknown name or an import path that cannot be imported.
    """
    if "." in name:
        return _build_user_model(import_model_class(name), num_classes, input_shape, kwargs)
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    shape = DEFAULT_INPUT_SHAPES[name] if input_shape is None else tuple(input_shape)
    if len(shape) != 3 and name != "mlp":
        raise ValueError(f"{name} needs input_shape (C, H, W), got {shape}")
    return _BUILDERS[name](num_classes, shape, kwargs)


#: What `build_model` passes to a user model class whose constructor has the parameter.
BENCHMARK_ARGUMENTS = ("num_classes", "in_channels", "in_features", "input_shape")


def import_model_class(path: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass at import path ``package.module.Class`` (LightningCLI's
    ``class_path``); raises ValueError saying what failed."""
    found = import_object(path, "model")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ValueError(f"model {path!r} is not an nn.Module subclass")
    return found


def _build_user_model(
    cls: type[nn.Module], num_classes: int, shape: tuple[int, ...] | None, kwargs: dict[str, Any]
) -> nn.Module:
    accepted = inspect.signature(cls).parameters
    given: dict[str, Any] = {"num_classes": num_classes}
    if shape is not None:
        shape = tuple(shape)
        given.update(in_channels=shape[0], in_features=math.prod(shape), input_shape=shape)
    return cls(**{k: v for k, v in given.items() if k in accepted}, **kwargs)
