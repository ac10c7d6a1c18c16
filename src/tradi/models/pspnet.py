"""PSPNet (Zhao et al., CVPR 2017): a dilated ResNet and a pyramid pooling module, the network of
the paper's StreetHazards and BDD-Anomaly tables (TRADI.md section 4).

Backbone: a ResNet (He et al. 2016; the torchvision layout, 7x7 stem) whose last stages trade
their stride for dilation, so the features keep 1/8 (``output_stride=8``, PSPNet's choice) or
1/16 of the input resolution. Head: the features average-pooled to 1x1, 2x2, 3x3 and 6x6 bins,
each reduced by a 1x1 conv to C/4 channels, upsampled and concatenated with the features, then
a 3x3 conv, dropout and a 1x1 classifier; the logits are upsampled bilinearly to the input size.

Trained from scratch here: no pretrained (ImageNet) weights can be fetched on this project's
machines, while the paper's PSPNet started from an ImageNet ResNet. PSPNet's auxiliary loss on
stage 3 (deep supervision) is left out: the shared training loop trains one output.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradi.models._init import kaiming_init_

#: Residual blocks per stage of each depth (He et al. 2016, table 1).
RESNET_STAGES: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
PYRAMID_BINS = (1, 2, 3, 6)


def _conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, dilation: int = 1
) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, bias=False)
    return [conv, nn.BatchNorm2d(out_channels)]


class _Block(nn.Module):
    """A basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 x4) residual block; the 3x3 conv
    carries the stride and the dilation; a 1x1 conv + BN projects the shortcut on shape change."""

    def __init__(
        self, in_channels: int, width: int, stride: int, dilation: int, bottleneck: bool
    ) -> None:
        super().__init__()
        out_channels = width * (4 if bottleneck else 1)
        if bottleneck:
            layers = [
                *_conv_bn(in_channels, width, 1),
                nn.ReLU(),
                *_conv_bn(width, width, 3, stride, dilation),
                nn.ReLU(),
                *_conv_bn(width, out_channels, 1),
            ]
        else:
            layers = [
                *_conv_bn(in_channels, width, 3, stride, dilation),
                nn.ReLU(),
                *_conv_bn(width, width, 3, 1, dilation),
            ]
        self.residual = nn.Sequential(*layers)
        self.shortcut: nn.Module = (
            nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class DilatedResNet(nn.Module):
    """ResNet-``depth`` without its classifier; stages 3 and 4 dilated for ``output_stride``.

    ``width`` is the first stage's width (64 in the original; a smaller one for a CPU budget).
    As torchvision does, the first block of a stage whose stride became dilation keeps the
    previous dilation. Output channels: ``out_channels`` (8 x width, 32 x width for depth >= 50).
    """

    def __init__(
        self, depth: int = 50, in_channels: int = 3, width: int = 64, output_stride: int = 8
    ) -> None:
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        bottleneck = depth >= 50
        self.stem = nn.Sequential(
            *_conv_bn(in_channels, width, 7, stride=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        # (stride, dilation) of stages 1..4: PSPNet's output stride 8 dilates stages 3 and 4
        plan = (
            [(1, 1), (2, 1), (1, 2), (1, 4)]
            if output_stride == 8
            else [(1, 1), (2, 1), (2, 1), (1, 2)]
        )
        stages: list[nn.Module] = []
        channels, previous_dilation = width, 1
        for index, (blocks, (stride, dilation)) in enumerate(
            zip(RESNET_STAGES[depth], plan, strict=True)
        ):
            stage_width = width * 2**index
            layers = []
            for block in range(blocks):
                first = block == 0
                layers.append(
                    _Block(
                        channels,
                        stage_width,
                        stride if first else 1,
                        previous_dilation if first else dilation,
                        bottleneck,
                    )
                )
                channels = stage_width * (4 if bottleneck else 1)
            stages.append(nn.Sequential(*layers))
            previous_dilation = dilation
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: [features, up(conv1x1(avgpool_b(features))) for b in
    bins] concatenated, C + len(bins) * (C // len(bins)) channels at the features' size."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = PYRAMID_BINS) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *_conv_bn(in_channels, reduced, 1), nn.ReLU())
            for b in bins
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size, mode="bilinear", align_corners=False)
            for branch in self.branches
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """PSPNet on a dilated ResNet-``depth``: logits [N, num_classes, H, W] for inputs
    [N, in_channels, H, W] of any size (float32).

    ``width``: the backbone's first-stage width (64: the published ResNets; ResNet-50 PSPNet has
    about 46.6M parameters with 19 classes). ``output_stride``: 8 (PSPNet) or 16 (a quarter of
    the cost of the last two stages). ``dropout``: the ``Dropout2d`` before the classifier
    (PSPNet's 0.1; MC Dropout switches it on). Raises ValueError for an unknown depth, output
    stride or bin list.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: Literal[18, 34, 50, 101] = 50,
        width: int = 64,
        output_stride: int = 8,
        bins: tuple[int, ...] = PYRAMID_BINS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not bins or min(bins) < 1:
            raise ValueError(f"bins must be a non-empty list of sizes >= 1, got {bins}")
        self.backbone = DilatedResNet(depth, in_channels, width, output_stride)
        features = self.backbone.out_channels
        self.pyramid = PyramidPooling(features, tuple(bins))
        head_width = features // 4
        self.head = nn.Sequential(
            *_conv_bn(self.pyramid.out_channels, head_width, 3),
            nn.ReLU(),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_width, num_classes, 1),
        )
        kaiming_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.pyramid(self.backbone(x)))
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=False)
