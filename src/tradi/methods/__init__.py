"""The paper's methods behind one interface: mcp, mc_dropout, deep_ensembles, swag,
gaussian_perturbation and tradi, the calibration baseline temperature_scaling, the modern
one-run peer ivon (optional package ivon-opt) and tradi_modes (beyond the paper: TRADI's tracked
modes from short cycles after training), each built by `build_method` and trained by the same
loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F

from tradi.methods.base import FitInfo, Method, ModelFactory
from tradi.methods.deep_ensembles import DeepEnsembles, DeepEnsemblesOptions
from tradi.methods.gaussian_perturbation import GaussianPerturbation, GaussianPerturbationOptions
from tradi.methods.ivon import IVON, IVONOptions
from tradi.methods.mc_dropout import MCDropout, MCDropoutOptions
from tradi.methods.mcp import MCP, MCPOptions
from tradi.methods.sampling import SamplingMethod
from tradi.methods.swag import SWAG, SWAGOptions
from tradi.methods.temperature_scaling import TemperatureScaling, TemperatureScalingOptions
from tradi.methods.tradi import TRADI, TradiOptions
from tradi.methods.tradi_modes import TradiModes, TradiModesOptions
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO
from tradi.selection import ScaleSearch, ScaleSelection
from tradi.training import TrainConfig, options_from_mapping
from tradi.training.hooks import LossFn

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        MCP,
        MCDropout,
        DeepEnsembles,
        SWAG,
        GaussianPerturbation,
        TRADI,
        IVON,
        TemperatureScaling,
        TradiModes,
    )
}
"""Every method class by its config name (``mcp``, ``mc_dropout``, ``deep_ensembles``, ``swag``,
``gaussian_perturbation``, ``tradi``, ``ivon``, ``temperature_scaling``, and ``tradi_modes``,
beyond the paper), in the paper's table order: what `build_method` builds and the experiment
configs' ``methods:`` keys name."""


def build_method(
    name: str,
    model_factory: ModelFactory,
    *,
    train: TrainConfig | Mapping[str, Any] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    selection: ScaleSelection | None = None,
    io: ModelIO = DEFAULT_IO,
    **options: Any,
) -> Method:
    """The method called ``name`` (see ``METHODS``) with its options given as keywords.

    ``train`` is the shared `TrainConfig` (or a mapping of its fields, e.g. from YAML); unknown
    option keys raise a ValueError that lists the valid ones. ``io`` (`tradi.ModelIO`) says how
    batches become model inputs and targets and which output holds the logits. ``selection``:
    the rule a sampling method applies to ``scale="auto"`` (default `ScaleSelection()`); other
    methods refuse it.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    cls = METHODS[name]
    if train is None or isinstance(train, TrainConfig):
        config = train
    else:
        config = options_from_mapping(TrainConfig, train)
    parsed = options_from_mapping(cls.options_type, options)
    if issubclass(cls, SamplingMethod):
        return cls(model_factory, parsed, train=config, loss_fn=loss_fn, io=io, selection=selection)
    if selection is not None:
        raise ValueError(f"{name} has no noise scale: it takes no selection rule")
    return cls(model_factory, parsed, train=config, loss_fn=loss_fn, io=io)


__all__ = [
    "IVON",
    "MCP",
    "METHODS",
    "SWAG",
    "TRADI",
    "DeepEnsembles",
    "DeepEnsemblesOptions",
    "FitInfo",
    "GaussianPerturbation",
    "GaussianPerturbationOptions",
    "IVONOptions",
    "MCDropout",
    "MCDropoutOptions",
    "MCPOptions",
    "Method",
    "ModelFactory",
    "SWAGOptions",
    "SamplingMethod",
    "ScaleSearch",
    "ScaleSelection",
    "TemperatureScaling",
    "TemperatureScalingOptions",
    "TradiModes",
    "TradiModesOptions",
    "TradiOptions",
    "build_method",
]
