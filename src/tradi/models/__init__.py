"""Architectures of the paper's experiments: MLP, LeNet-5, ResNet-20, WRN-28-10, ENet, PSPNet.

Every model keeps dropout as ``nn.Dropout``/``nn.Dropout2d`` modules (MC Dropout switches them
on) and BatchNorm as standard modules (SWAG and TRADI re-estimate their statistics).
"""

from tradi.models.enet import ENet
from tradi.models.factory import DEFAULT_INPUT_SHAPES, MODEL_NAMES, ModelName, build_model
from tradi.models.lenet import LeNet5
from tradi.models.mlp import MLP
from tradi.models.pspnet import PSPNet
from tradi.models.resnet import ResNet20, WideResNet

__all__ = [
    "DEFAULT_INPUT_SHAPES",
    "MLP",
    "MODEL_NAMES",
    "ENet",
    "LeNet5",
    "ModelName",
    "PSPNet",
    "ResNet20",
    "WideResNet",
    "build_model",
]
