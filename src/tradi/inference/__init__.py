"""Predictions from a weight posterior: the sampled ensemble, the linearized (GLM) predictive, mixtures of modes, BatchNorm re-estimation, the trunk cache, the regression predictive."""

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES, update_bn_stats
from tradi.inference.ensemble import SampledEnsemble
from tradi.inference.linearized import LinearizedEnsemble, probit_softmax
from tradi.inference.mixture import MixturePredictive
from tradi.inference.regression import GaussianPrediction, mixture_moments

__all__ = [
    "DEFAULT_BN_BATCHES",
    "GaussianPrediction",
    "LinearizedEnsemble",
    "MixturePredictive",
    "SampledEnsemble",
    "mixture_moments",
    "probit_softmax",
    "update_bn_stats",
]
