"""Gaussian weight posteriors: each draws one weight set {parameter name: tensor} per `sample`.

Parameters a posterior does not return (untracked ones such as BatchNorm affine parameters) are
taken from the model as it is.
"""

from tradi.posterior.gaussian import DiagonalGaussian, KernelGaussian, WeightPosterior

__all__ = ["DiagonalGaussian", "KernelGaussian", "WeightPosterior"]
