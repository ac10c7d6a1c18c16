"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, the usual modern reading."""

from __future__ import annotations

from torch import Tensor, nn

from tradi.models._init import kaiming_init_


class LeNet5(nn.Module):
    """conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> FC 120 -> FC 84 -> FC classes.

    For inputs smaller than 32x32 (MNIST's 28x28) the first conv gets padding 2, as in the
    original, so the last feature map stays 5x5. Classic LeNet-5 has no dropout, hence the
    default 0; the two Dropout modules after FC 120 and FC 84 are always present so MC Dropout
    can switch them on with ``dropout > 0``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        padding = 2 if input_size < 32 else 0
        side = ((input_size + 2 * padding - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet5 needs inputs of at least 12x12 pixels, got {input_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )
        kaiming_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
