"""Predictions from a weight posterior: the sampled ensemble, BatchNorm re-estimation, the trunk cache, the regression predictive."""

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES, update_bn_stats
from tradi.inference.ensemble import SampledEnsemble
from tradi.inference.regression import GaussianPrediction, mixture_moments

__all__ = [
    "DEFAULT_BN_BATCHES",
    "GaussianPrediction",
    "SampledEnsemble",
    "mixture_moments",
    "update_bn_stats",
]
