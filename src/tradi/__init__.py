"""tradi: calibrated uncertainty and OOD detection for any PyTorch network from one training run.

TRADI (Franchi et al., ECCV 2020) tracks every weight's mean and variance with a Kalman filter
during ordinary training, then samples weight sets from that Gaussian and averages predictions.

`import tradi` loads only the tracker, posteriors and ensemble; the methods, training loop, data
and models are imported on first use (`tradi.build_method`, ...), so a user who only tracks
weights does not pay for torchmetrics and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from tradi.ensemble import SampledEnsemble, update_bn_stats
from tradi.posterior import (
    DiagonalGaussian,
    IsotropicGaussian,
    KernelGaussian,
    SWAGPosterior,
    WeightPosterior,
)
from tradi.tracking import KalmanConfig, WeightTracker

__version__ = "0.1.0"

_LAZY = {
    "fit_ensemble": "tradi.auto_scale",
    "ScaleSelection": "tradi.selection",
    "ScaleSearch": "tradi.selection",
    "build_method": "tradi.methods",
    "METHODS": "tradi.methods",
    "fit": "tradi.training",
    "Callback": "tradi.training",
    "TrainConfig": "tradi.training",
    "build_model": "tradi.models",
    "load_benchmark": "tradi.data",
    "load_dataset": "tradi.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tradi' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Callback",
    "DiagonalGaussian",
    "IsotropicGaussian",
    "KalmanConfig",
    "KernelGaussian",
    "SWAGPosterior",
    "SampledEnsemble",
    "ScaleSearch",
    "ScaleSelection",
    "TrainConfig",
    "WeightPosterior",
    "WeightTracker",
    "__version__",
    "build_method",
    "build_model",
    "fit",
    "fit_ensemble",
    "load_benchmark",
    "load_dataset",
    "update_bn_stats",
]
