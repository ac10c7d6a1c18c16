"""The MLP of the paper's MNIST experiment (TRADI.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tradi.models._init import kaiming_init_


class MLP(nn.Module):
    """784-200-200-200-10 by default: each hidden layer is Linear -> BatchNorm1d -> ReLU, and
    every hidden layer but the first is followed by Dropout (the paper: after hidden layers 2
    and 3, p = 0.1). Kaiming-normal weights, zero biases.

    Inputs of any shape [N, ...] are flattened, so [N, 1, 28, 28] and [N, 784] both work;
    use ``in_features=64`` for the 8x8 digits.
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden_features: Sequence[int] = (200, 200, 200),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not hidden_features:
            raise ValueError("hidden_features must name at least one hidden layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for index, width in enumerate(hidden_features):
            layers += [nn.Linear(width_in, width), nn.BatchNorm1d(width), nn.ReLU()]
            if index > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.layers = nn.Sequential(*layers)
        kaiming_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
