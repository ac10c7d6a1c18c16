"""TRADI's weight samplers (TRADI.md section 3): w~ = mu + Sigma^(1/2) m, m ~ N(0, I)."""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from tradi.posterior.state import StatefulPosterior

#: Elements of the largest temporary block a sampler builds (4 MiB of float32): chunked sampling
#: keeps a sample's extra memory O(tensor size) whatever the rank (issue 11, item 8).
CHUNK_ELEMENTS = 2**20


@runtime_checkable
class WeightPosterior(Protocol):
    """Anything that draws weight sets: the one interface every sampling method shares."""

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...


def _check_pair(mean: dict[str, Tensor], variance: dict[str, Tensor]) -> None:
    if mean.keys() != variance.keys():
        raise ValueError("mean and variance must have the same parameter names")
    for name, m in mean.items():
        if m.shape != variance[name].shape:
            raise ValueError(
                f"{name}: mean shape {tuple(m.shape)} != variance shape {tuple(variance[name].shape)}"
            )


def _std(variance: Tensor) -> Tensor:
    # a filter fed by rounding noise may leave tiny negative variances: clamp, never NaN
    return variance.clamp_min(0).sqrt()


class DiagonalGaussian(StatefulPosterior):
    """Independent weights: w~ = mu + scale * sqrt(sigma2) * m."""

    kind = "diagonal"
    state_fields = ("mean", "std", "scale")

    def __init__(
        self, mean: dict[str, Tensor], variance: dict[str, Tensor], *, scale: float = 1.0
    ) -> None:
        _check_pair(mean, variance)
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.mean = mean
        self.std = {n: scale * _std(v) for n, v in variance.items()}
        self.scale = scale

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {
            n: torch.addcmul(
                mu,
                self.std[n],
                torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype),
            )
            for n, mu in self.mean.items()
        }


class KernelGaussian(StatefulPosterior):
    """The paper's low-rank kernel covariance, per parameter tensor, by random Fourier features.

    For a tensor of P weights and rank D: s = sqrt(sigma2), Omega ~ N(0, 1)^D, b ~ U(0, 2 pi)^D,
    Z = diag(s) cos(w* Omega^T + b) (P x D), w~ = mu + scale * sqrt(2 / D) Z m, m ~ N(0, I_D),
    with fresh Omega, b, m per sample. In expectation Cov(w~_i, w~_j) =
    scale^2 s_i s_j exp(-(w*_i - w*_j)^2 / 2): the diagonal is exactly sigma2 and weights whose
    trained values are close move together.

    phase="weight" draws b per weight (P x D), as the authors' public code does; the cross terms
    then vanish in expectation, so its samples are diagonal in effect. It exists only to compare
    with that code.
    """

    kind = "kernel"
    state_fields = ("mean", "anchor", "std", "rank", "scale", "phase")

    def __init__(
        self,
        mean: dict[str, Tensor],
        variance: dict[str, Tensor],
        anchor: dict[str, Tensor],
        *,
        rank: int = 10,
        scale: float = 1.0,
        phase: Literal["feature", "weight"] = "feature",
    ) -> None:
        _check_pair(mean, variance)
        _check_pair(mean, anchor)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        if phase not in ("feature", "weight"):
            raise ValueError(f"phase must be 'feature' or 'weight', got {phase!r}")
        self.mean = mean
        self.anchor = {n: a.reshape(-1, 1) for n, a in anchor.items()}
        self.std = {
            n: (scale * math.sqrt(2.0 / rank)) * _std(v).reshape(-1, 1) for n, v in variance.items()
        }
        self.rank, self.scale, self.phase = rank, scale, phase

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One weight set; Z m is built `CHUNK_ELEMENTS // rank` rows at a time.

        The extra memory is the output tensor plus one (rows x D) block, whatever the rank
        (benchmarks/bench_inference.py, sampling_memory). With phase="weight" the phases are
        drawn block by block too, after Omega and m.
        """
        out = {}
        rows = max(1, CHUNK_ELEMENTS // self.rank)
        for name, mu in self.mean.items():
            kw = {"generator": generator, "device": mu.device, "dtype": mu.dtype}
            omega = torch.randn(1, self.rank, **kw)
            b = (
                torch.rand(1, self.rank, **kw).mul_(2 * math.pi)
                if self.phase == "feature"
                else None
            )
            m = torch.randn(self.rank, 1, **kw)
            anchor, std = self.anchor[name], self.std[name]
            flat = torch.empty(anchor.shape[0], device=mu.device, dtype=mu.dtype)
            for start in range(0, anchor.shape[0], rows):
                block = anchor[start : start + rows] * omega  # (rows, D)
                if b is None:  # the public code's per-weight phase
                    block += torch.rand(block.shape, **kw).mul_(2 * math.pi)
                else:
                    block += b
                flat[start : start + rows] = (block.cos_() @ m).squeeze(1)
            flat.mul_(std.squeeze(1))
            out[name] = flat.reshape(mu.shape).add_(mu)
        return out
