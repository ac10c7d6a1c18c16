"""Batched data augmentation with torch ops, seeded by a `torch.Generator`.

Applied to whole batches of in-memory tensors inside the training loop (no per-sample PIL
transforms, no worker processes), so a seeded run is reproducible on CPU and GPU alike: every
random draw is made on the generator's device and then moved to the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor


class Augment(Protocol):
    """What `Benchmark.augment` holds: a batch (x, y) in, an augmented batch out."""

    def __call__(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def random_horizontal_flip(
    x: Tensor, y: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Flip each sample left-right with probability 1/2.

    Label maps (``y`` of shape [N, H, W]) are flipped with the same draw as their images, so
    pixels keep their labels; class labels ([N]) are returned unchanged.
    """
    flip = torch.rand(x.shape[0], generator=generator, device=_draw_device(generator)) < 0.5
    flip = flip.to(x.device)
    x = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)
    if y.ndim == x.ndim - 1:
        y = torch.where(flip.view(-1, *[1] * (y.ndim - 1)), y.flip(-1), y)
    return x, y


def random_crop(
    x: Tensor,
    y: Tensor,
    generator: torch.Generator | None = None,
    padding: int = 4,
    fill: float | Sequence[float] = 0.0,
) -> tuple[Tensor, Tensor]:
    """Pad each image by ``padding`` pixels of value ``fill`` (one value or one per channel)
    and crop it back to its size at a uniformly drawn offset; class labels are unchanged.

    For normalised inputs, the fill that reproduces the usual zero (black) padding of raw images
    is ``-mean / std`` per channel.
    """
    if y.ndim != 1:
        raise ValueError("random_crop is for class labels [N]; label maps would need cropping")
    n, channels, height, width = x.shape
    padded = x.new_empty(n, channels, height + 2 * padding, width + 2 * padding)
    padded[:] = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    padded[:, :, padding : padding + height, padding : padding + width] = x
    draw_device = _draw_device(generator)
    top, left = (
        torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=draw_device).to(
            x.device
        )
        for _ in range(2)
    )
    rows = (top[:, None] + torch.arange(height, device=x.device)).view(n, 1, height, 1)
    cols = (left[:, None] + torch.arange(width, device=x.device)).view(n, 1, 1, width)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(channels, device=x.device).view(1, channels, 1, 1)
    return padded[batch, channel, rows, cols], y


class CropAndFlip:
    """The standard CIFAR augmentation: random crop with ``padding`` and a horizontal flip."""

    def __init__(self, padding: int = 4, fill: float | Sequence[float] = 0.0) -> None:
        self.padding = padding
        self.fill = fill

    def __call__(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        x, y = random_crop(x, y, generator, self.padding, self.fill)
        return random_horizontal_flip(x, y, generator)
