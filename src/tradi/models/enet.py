"""ENet (Paszke et al. 2016), the segmentation network of the paper's CamVid-OOD experiment.

Any input size works, including CamVid's 90 x 120 whose sides are not divisible by 8: every
pooling floors the size, and every decoder step is given the exact size of the encoder map it
mirrors (``output_size`` of max-unpooling and of the transposed convolutions), so the logits
always come back at the input's height and width.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradi.models._init import kaiming_init_

ConvKind = Literal["regular", "dilated", "asymmetric"]


def _conv_bn_act(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, act: nn.Module
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, bias=False),
        nn.BatchNorm2d(out_channels),
        act,
    )


def _activation(decoder: bool, channels: int) -> nn.Module:
    """PReLU (one slope per channel) in the encoder, ReLU in the decoder, as in the paper."""
    return nn.ReLU() if decoder else nn.PReLU(channels)


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (13 maps) concatenated with a max-pool of the input (3 maps) -> 16."""

    def __init__(self, in_channels: int = 3, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False
        )
        # Kernel 3, padding 1 gives the conv's output size for odd inputs too.
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 projection, a regular/dilated/asymmetric conv, 1x1 expansion,
    spatial dropout, added to the identity."""

    def __init__(
        self,
        channels: int,
        kind: ConvKind = "regular",
        dilation: int = 1,
        dropout: float = 0.1,
        decoder: bool = False,
    ) -> None:
        super().__init__()
        internal = channels // 4
        if kind == "asymmetric":
            middle: list[nn.Module] = [
                nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(internal, internal, (1, 5), padding=(0, 2), bias=False),
            ]
        else:
            middle = [
                nn.Conv2d(internal, internal, 3, padding=dilation, dilation=dilation, bias=False)
            ]
        self.branch = nn.Sequential(
            _conv_bn_act(channels, internal, 1, 1, _activation(decoder, internal)),
            *middle,
            nn.BatchNorm2d(internal),
            _activation(decoder, internal),
            _conv_bn_act(internal, channels, 1, 1, _activation(decoder, channels)),
            nn.Dropout2d(dropout),
        )
        self.out_act = _activation(decoder, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_act(x + self.branch(x))


class DownsamplingBottleneck(nn.Module):
    """Halves the resolution; the main path max-pools (keeping the indices for the decoder) and
    zero-pads the channels, the branch starts with a 2x2 stride-2 projection."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        internal = out_channels // 4
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.extra_channels = out_channels - in_channels
        self.branch = nn.Sequential(
            _conv_bn_act(in_channels, internal, 2, 2, nn.PReLU(internal)),
            nn.Conv2d(internal, internal, 3, padding=1, bias=False),
            nn.BatchNorm2d(internal),
            nn.PReLU(internal),
            _conv_bn_act(internal, out_channels, 1, 1, nn.PReLU(out_channels)),
            nn.Dropout2d(dropout),
        )
        self.out_act = nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        main, indices = self.pool(x)
        main = F.pad(main, (0, 0, 0, 0, 0, self.extra_channels))
        return self.out_act(main + self.branch(x)), indices


class UpsamplingBottleneck(nn.Module):
    """Doubles the resolution back to ``output_size``: max-unpooling with the encoder's indices on
    the main path, a 2x2 stride-2 transposed conv in the branch (it reaches both 2n and 2n + 1)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        internal = in_channels // 4
        self.main_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.project = _conv_bn_act(in_channels, internal, 1, 1, nn.ReLU())
        self.upconv = nn.ConvTranspose2d(internal, internal, 2, stride=2, bias=False)
        self.expand = nn.Sequential(
            nn.BatchNorm2d(internal),
            nn.ReLU(),
            _conv_bn_act(internal, out_channels, 1, 1, nn.ReLU()),
            nn.Dropout2d(dropout),
        )
        self.out_act = nn.ReLU()

    def forward(self, x: Tensor, indices: Tensor, output_size: torch.Size) -> Tensor:
        main = self.unpool(self.main_conv(x), indices, output_size=output_size)
        branch = self.upconv(self.project(x), output_size=output_size)
        return self.out_act(main + self.expand(branch))


class ENet(nn.Module):
    """ENet (~0.36M parameters): initial block, encoder stages 1-3 (downsampling, dilated and
    asymmetric bottlenecks), decoder stages 4-5 (max-unpooling) and a transposed-conv classifier.

    Spatial dropout is p = 0.01 in stage 1 and ``dropout`` (paper: 0.1) afterwards. Returns logits
    [N, num_classes, H, W] for an input [N, in_channels, H, W].
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*(Bottleneck(64, dropout=0.01) for _ in range(4)))
        self.down2 = DownsamplingBottleneck(64, 128, dropout=dropout)
        self.stage2 = self._dilated_stage(dropout)
        self.stage3 = self._dilated_stage(dropout)
        self.up4 = UpsamplingBottleneck(128, 64, dropout=dropout)
        self.stage4 = nn.Sequential(
            *(Bottleneck(64, dropout=dropout, decoder=True) for _ in range(2))
        )
        self.up5 = UpsamplingBottleneck(64, 16, dropout=dropout)
        self.stage5 = Bottleneck(16, dropout=dropout, decoder=True)
        self.classifier = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, bias=False)
        kaiming_init_(self)

    @staticmethod
    def _dilated_stage(dropout: float) -> nn.Sequential:
        """Stages 2 and 3: regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
        asymmetric 5, dilated 16."""
        layout: list[tuple[ConvKind, int]] = [
            ("regular", 1),
            ("dilated", 2),
            ("asymmetric", 1),
            ("dilated", 4),
            ("regular", 1),
            ("dilated", 8),
            ("asymmetric", 1),
            ("dilated", 16),
        ]
        return nn.Sequential(
            *(Bottleneck(128, kind, dilation, dropout=dropout) for kind, dilation in layout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.initial(x)
        x1, indices1 = self.down1(x0)
        x1 = self.stage1(x1)
        x2, indices2 = self.down2(x1)
        x2 = self.stage3(self.stage2(x2))
        y = self.stage4(self.up4(x2, indices2, x1.shape[-2:]))
        y = self.stage5(self.up5(y, indices1, x0.shape[-2:]))
        return self.classifier(y, output_size=x.shape[-2:])
