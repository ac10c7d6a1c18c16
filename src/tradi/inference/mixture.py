"""A mixture predictive: several modes' predictives, averaged with equal weights.

p(y | x) = (1/K) sum_k p_k(y | x), one predictive per mode (a snapshot of the network with its
own tracked Gaussian around it). Several modes matter more than the shape of one mode's Gaussian
(Fort et al. 2019; Ashukha et al. 2020); a local Gaussian around each mode adds to either alone
(MultiSWAG, Wilson & Izmailov 2020).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor


class Predictive(Protocol):
    """Anything that maps model inputs to class probabilities [N, C, ...]."""

    def __call__(self, x: Any) -> Tensor: ...


class MixturePredictive:
    """The equal-weight mixture of ``members``' class probabilities.

    Args:
        members: one predictive per mode (`LinearizedEnsemble`, `SampledEnsemble`, a network's
            softmax, ...), each mapping inputs to probabilities of the same shape [N, C, ...].
        io: how a batch becomes inputs in `predict` (anything with ``inputs(batch)``); None:
            the first member's ``io``, else tuples ``(inputs, targets)``.

    Raises:
        ValueError: no member.
    """

    def __init__(self, members: Sequence[Predictive], io: Any = None) -> None:
        if not members:
            raise ValueError("a mixture needs at least one member")
        self.members = list(members)
        self.io = io if io is not None else getattr(self.members[0], "io", None)

    def member_probs(self, x: Any) -> Tensor:
        """Each member's probabilities, [K, N, C, ...] (float)."""
        return torch.stack([member(x) for member in self.members])

    def __call__(self, x: Any) -> Tensor:
        """The mixture's class probabilities, [N, C, ...]."""
        return self.member_probs(x).mean(dim=0)

    def predict(self, loader: Iterable[Any]) -> Tensor:
        """Probabilities over a loader, [N, C, ...] on the CPU."""
        inputs = self.io.inputs if self.io is not None else (lambda batch: batch[0])
        return torch.cat([self(inputs(batch)).cpu() for batch in loader])
