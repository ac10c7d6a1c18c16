"""One weight initialisation for every model, so methods compare architectures, not init schemes."""

from __future__ import annotations

from torch import nn


def kaiming_init_(model: nn.Module) -> None:
    """Kaiming-normal conv/linear weights (std sqrt(2 / fan_in)), zero biases, BatchNorm at identity.

    The paper's MLP uses exactly this (TRADI.md §4); the conv nets use it too so that the weight
    scale TRADI's tracker starts from is the same rule everywhere.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
