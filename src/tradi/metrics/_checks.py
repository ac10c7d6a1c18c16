"""Input checks shared by every metric, so that bad input fails loudly with the same message.

A metric that silently accepts logits, NaNs or labels out of range returns a plausible number
that is wrong; every comparison in the project stands on these numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: How far the class probabilities of one prediction may sum away from 1 (float32 averages of
#: softmax outputs over many samples and classes stay far inside it; logits never do). A dtype
#: whose machine epsilon is larger gets its epsilon: rounding each p_c to bfloat16 moves the sum
#: by up to eps/2 (measured 3.1e-3 on softmax outputs over 10 classes).
PROBABILITY_SUM_ATOL = 1e-3


def sum_tolerance(dtype: torch.dtype) -> float:
    """The sum-to-one tolerance of probabilities stored in ``dtype``."""
    return max(PROBABILITY_SUM_ATOL, torch.finfo(dtype).eps)


def _require_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def as_compute_float(tensor: Tensor) -> Tensor:
    """float16/bfloat16 as float32, other dtypes unchanged: half precision cannot hold a sum over
    many classes, so sums and logarithms of probabilities run in float32 or higher."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def check_probabilities(probs: Tensor, name: str = "probs", class_dim: int = 1) -> Tensor:
    """Validate class probabilities with classes along `class_dim`; return them unchanged.

    The checks run in float32 or higher; the tensor comes back in its own dtype, because the
    metrics' conventions (bin edges, the NLL clamp) follow the dtype the probabilities came in.
    Raises TypeError for a non-tensor or non-float input, ValueError for a wrong shape, NaN,
    values outside [0, 1] or rows not summing to 1 (both within `sum_tolerance`)."""
    probs = _require_tensor(probs, name)
    if not probs.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor of probabilities, got {probs.dtype}"
        )
    if probs.ndim < class_dim + 1:
        raise ValueError(
            f"{name} must have classes along dim {class_dim} (shape [N, C] or [N, C, H, W]), "
            f"got shape {tuple(probs.shape)}"
        )
    if probs.shape[class_dim] < 1:
        raise ValueError(f"{name} has no classes (shape {tuple(probs.shape)})")
    if probs.numel() == 0:
        return probs
    wide = as_compute_float(probs)
    # one pass for NaN, inf and range: min and max propagate NaN, and +-inf fail the range
    low, high = torch.aminmax(wide)
    if torch.isnan(low) or torch.isnan(high):
        raise ValueError(f"{name} contains NaN")
    atol = sum_tolerance(probs.dtype)
    if low < -atol or high > 1 + atol:
        raise ValueError(
            f"{name} must lie in [0, 1] (got values in [{low.item():.4g}, {high.item():.4g}]); "
            "pass probabilities, not logits"
        )
    worst = (wide.sum(dim=class_dim) - 1).abs().max().item()
    if worst > atol:
        raise ValueError(
            f"{name} must sum to 1 over dim {class_dim} within {atol:.3g} "
            f"(worst deviation {worst:.4g}); pass probabilities, not logits"
        )
    return probs


def flatten_predictions(
    probs: Tensor, labels: Tensor, ignore_index: int | None = None
) -> tuple[Tensor, Tensor]:
    """Check probs [N, C, *] against labels [N, *]; return probs [M, C] and labels [M] without
    the ignored positions, so that classification and segmentation share every metric."""
    probs = check_probabilities(probs)
    labels = _require_tensor(labels, "labels")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    expected = (probs.shape[0], *probs.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match probs shape {tuple(probs.shape)}: "
            f"expected {expected} (probs without the class dim 1)"
        )
    num_classes = probs.shape[1]
    flat_probs = probs.movedim(1, -1).reshape(-1, num_classes)
    flat_labels = labels.reshape(-1)
    if ignore_index is not None:
        keep = flat_labels != ignore_index
        flat_probs, flat_labels = flat_probs[keep], flat_labels[keep]
    if flat_labels.numel() and (flat_labels.min() < 0 or flat_labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}]"
            + ("" if ignore_index is None else f" or equal ignore_index={ignore_index}")
            + f", got values in [{flat_labels.min().item()}, {flat_labels.max().item()}]"
        )
    return flat_probs, flat_labels


def check_scores(scores: Tensor, name: str) -> Tensor:
    """Validate OOD scores (any shape, flattened); an empty set makes every OOD metric undefined."""
    scores = _require_tensor(scores, name)
    if scores.dtype == torch.bool or scores.is_complex():
        raise TypeError(f"{name} must be a real-valued tensor, got {scores.dtype}")
    scores = scores.reshape(-1).double()
    if scores.numel() == 0:
        raise ValueError(f"{name} is empty: OOD metrics need both in-distribution and OOD samples")
    if torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores
