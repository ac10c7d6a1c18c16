"""tradi: calibrated uncertainty and OOD detection for any PyTorch network from one training run.

TRADI (Franchi et al., ECCV 2020) tracks every weight's mean and variance with a Kalman filter
during ordinary training, then samples weight sets from that Gaussian and averages predictions.
"""

from tradi.ensemble import SampledEnsemble, update_bn_stats
from tradi.posterior import DiagonalGaussian, KernelGaussian, WeightPosterior
from tradi.tracking import KalmanConfig, WeightTracker

__version__ = "0.1.0"

__all__ = [
    "DiagonalGaussian",
    "KalmanConfig",
    "KernelGaussian",
    "SampledEnsemble",
    "WeightPosterior",
    "WeightTracker",
    "__version__",
    "update_bn_stats",
]
