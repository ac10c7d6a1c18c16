"""tradi: calibrated uncertainty and OOD detection for any PyTorch network from one training run.

TRADI (Franchi et al., ECCV 2020) tracks every weight's mean and variance with a Kalman filter
during ordinary training, then samples weight sets from that Gaussian and averages predictions.

Every name is imported on first use (`tradi.WeightTracker`, `tradi.build_method`, ...): `import
tradi` loads nothing heavy, `tradi --help` answers without loading torch, and a user who only
tracks weights does not pay for torchmetrics and matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradi._imports import lazy_names

if TYPE_CHECKING:  # the names below are imported on first use (`__getattr__`)
    from tradi.data import load_benchmark, load_dataset
    from tradi.inference.batchnorm import update_bn_stats
    from tradi.inference.ensemble import SampledEnsemble
    from tradi.inference.linearized import LinearizedEnsemble
    from tradi.inference.mixture import MixturePredictive
    from tradi.inference.regression import GaussianPrediction
    from tradi.methods import METHODS, build_method
    from tradi.metrics.evaluation import Evaluation, evaluate
    from tradi.models import build_model
    from tradi.plumbing.adapters import ModelIO
    from tradi.posterior import (
        DiagonalGaussian,
        IsotropicGaussian,
        KernelGaussian,
        SWAGPosterior,
        WeightPosterior,
    )
    from tradi.tracking import KalmanConfig, WeightTracker
    from tradi.training import Callback, TrainConfig, fit
    from tradi.training.exploration import Exploration, explore

#: The package version; pyproject.toml reads it from here (the single source).
__version__ = "0.1.0"

_LAZY = {
    "fit_ensemble": "tradi.selection.fit",
    "explore": "tradi.training.exploration",
    "Exploration": "tradi.training.exploration",
    "LinearizedEnsemble": "tradi.inference.linearized",
    "MixturePredictive": "tradi.inference.mixture",
    "ScaleSelection": "tradi.selection",
    "ScaleSearch": "tradi.selection",
    "ModelIO": "tradi.plumbing.adapters",
    "GaussianPrediction": "tradi.inference.regression",
    "SampledEnsemble": "tradi.inference.ensemble",
    "update_bn_stats": "tradi.inference.batchnorm",
    "evaluate": "tradi.metrics.evaluation",
    "Evaluation": "tradi.metrics.evaluation",
    "DiagonalGaussian": "tradi.posterior",
    "IsotropicGaussian": "tradi.posterior",
    "KernelGaussian": "tradi.posterior",
    "SWAGPosterior": "tradi.posterior",
    "WeightPosterior": "tradi.posterior",
    "KalmanConfig": "tradi.tracking",
    "WeightTracker": "tradi.tracking",
    "build_method": "tradi.methods",
    "METHODS": "tradi.methods",
    "fit": "tradi.training",
    "Callback": "tradi.training",
    "TrainConfig": "tradi.training",
    "build_model": "tradi.models",
    "load_benchmark": "tradi.data",
    "load_dataset": "tradi.data",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "METHODS",
    "Callback",
    "DiagonalGaussian",
    "Evaluation",
    "Exploration",
    "GaussianPrediction",
    "IsotropicGaussian",
    "KalmanConfig",
    "KernelGaussian",
    "LinearizedEnsemble",
    "MixturePredictive",
    "ModelIO",
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
    "evaluate",
    "explore",
    "fit",
    "fit_ensemble",
    "load_benchmark",
    "load_dataset",
    "update_bn_stats",
]
