"""Gaussian weight posteriors: each draws one weight set {parameter name: tensor} per `sample`.

Parameters a posterior does not return (untracked ones such as BatchNorm affine parameters) are
taken from the model as it is.
"""

from tradi.posterior.gaussian import DiagonalGaussian, KernelGaussian, WeightPosterior
from tradi.posterior.isotropic import IsotropicGaussian
from tradi.posterior.state import StatefulPosterior, load_posterior
from tradi.posterior.swag import SWAGCollector, SWAGPosterior

__all__ = [
    "DiagonalGaussian",
    "IsotropicGaussian",
    "KernelGaussian",
    "SWAGCollector",
    "SWAGPosterior",
    "StatefulPosterior",
    "WeightPosterior",
    "load_posterior",
]
