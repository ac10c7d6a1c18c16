"""Batched augmentation: crops are windows of the padded image, flips are joint, seeds repeat."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tradi.data import CropAndFlip, random_crop, random_horizontal_flip


def windows(image: torch.Tensor, padding: int, fill: torch.Tensor) -> list[torch.Tensor]:
    """Every crop of ``image`` padded with ``fill`` (an independent, loop-based reference)."""
    channels, height, width = image.shape
    padded = fill.view(-1, 1, 1).expand(channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, padding : padding + height, padding : padding + width] = image
    return [
        padded[:, top : top + height, left : left + width]
        for top in range(2 * padding + 1)
        for left in range(2 * padding + 1)
    ]


def test_random_crop_returns_windows_of_the_padded_image_with_per_channel_fill() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 3, 8, 8), torch.arange(40)
    fill = torch.tensor([-1.0, 0.5, 2.0])
    cropped, labels = random_crop(
        x, y, torch.Generator().manual_seed(1), padding=2, fill=fill.tolist()
    )
    assert cropped.shape == x.shape
    assert torch.equal(labels, y)
    offsets = set()
    for i in range(len(x)):
        matches = [k for k, w in enumerate(windows(x[i], 2, fill)) if torch.equal(w, cropped[i])]
        assert matches, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets vary across the batch (25 possible)


def test_crop_offsets_are_uniform() -> None:
    # A single bright pixel at (0, 0); after the crop it sits at (pad - top, pad - left).
    n, padding = 4000, 4
    x = torch.zeros(n, 1, 9, 9)
    x[:, :, 0, 0] = 1.0
    cropped, _ = random_crop(x, torch.zeros(n), torch.Generator().manual_seed(2), padding)
    visible = cropped.flatten(1).sum(1) > 0
    # The pixel stays visible when top <= 4 and left <= 4: probability (5 / 9)^2.
    assert abs(visible.float().mean().item() - 25 / 81) < 4 * (25 / 81 * 56 / 81 / n) ** 0.5


def test_flip_is_applied_to_half_the_batch_and_jointly_to_label_maps() -> None:
    n = 2000
    labels = torch.randint(0, 11, (n, 5, 7), generator=torch.Generator().manual_seed(3))
    images = F.one_hot(labels, 11).permute(0, 3, 1, 2).float()  # the image encodes its labels
    flipped_x, flipped_y = random_horizontal_flip(images, labels, torch.Generator().manual_seed(4))
    assert torch.equal(flipped_x.argmax(1), flipped_y)  # every pixel kept its label
    was_flipped = (flipped_y != labels).flatten(1).any(1)
    assert torch.equal(flipped_y[was_flipped], labels[was_flipped].flip(-1))
    assert torch.equal(flipped_y[~was_flipped], labels[~was_flipped])
    # A random 5x7 map is never its own mirror image, so was_flipped is exact; SE = 0.011.
    assert abs(was_flipped.float().mean().item() - 0.5) < 0.05

    class_labels = torch.arange(n)
    _, same = random_horizontal_flip(images, class_labels, torch.Generator().manual_seed(4))
    assert torch.equal(same, class_labels)


def test_augmentation_is_reproducible_from_the_generator_seed() -> None:
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16)
    augment = CropAndFlip(padding=4)
    first, _ = augment(x, y, torch.Generator().manual_seed(7))
    again, _ = augment(x, y, torch.Generator().manual_seed(7))
    other, _ = augment(x, y, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_random_crop_refuses_label_maps() -> None:
    with pytest.raises(ValueError, match="label maps"):
        random_crop(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4))
