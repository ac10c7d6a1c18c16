"""SWAG (Maddox et al., 2019): a Gaussian over weights from the moments of SGD iterates.

From iterates w_1..w_n (one per epoch late in training):
    mean = (1/n) sum w_i,   diag = max((1/n) sum w_i^2 - mean^2, eps),
    D    = the last K deviations w_i - mean_i (mean_i: the running mean including w_i),
and a sample is
    w~ = mean + sqrt(covariance_scale) * (sqrt(diag) * z1 + D z2 / sqrt(K - 1)),
    z1 ~ N(0, I_P), z2 ~ N(0, I_K),
so Cov(w~) = covariance_scale * (diag(diag) + D D^T / (K - 1)) (K - 1 read as 1 when K = 1). SWAG's own code calls
covariance_scale "scale" and uses 0.5; note that it multiplies the covariance, whereas TRADI's
scale multiplies the standard deviation. The low-rank term couples every parameter of the model:
z2 is shared by all tensors of one sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tradi.plumbing.structure import named_parameters_with_owner
from tradi.posterior.state import StatefulPosterior

ParamFilter = Callable[[str, nn.Module, nn.Parameter], bool]

_VARIANCE_FLOOR = 1e-30  # SWAG's var_clamp: keeps sqrt finite when an iterate never moved


def all_trainable(name: str, module: nn.Module, param: nn.Parameter) -> bool:
    """SWAG's default: every trainable parameter, normalisation affine ones included."""
    return param.requires_grad


class SWAGPosterior(StatefulPosterior):
    """Samples w~ = mean + sqrt(covariance_scale) * (sqrt(diag) z1 + D z2 / sqrt(K - 1)).

    Args:
        mean: SWA mean {name: tensor}.
        variance: diagonal variance {name: tensor} (clamped to a tiny floor).
        deviations: {name: tensor [K, *shape]}, the K deviation columns of D.
        covariance_scale: multiplies the whole covariance (0.5 in SWAG; 0 gives the SWA mean).
    """

    kind = "swag"
    state_fields = ("mean", "std", "factors", "rank", "low_rank_scale", "covariance_scale")

    def __init__(
        self,
        mean: dict[str, Tensor],
        variance: dict[str, Tensor],
        deviations: dict[str, Tensor],
        *,
        covariance_scale: float = 0.5,
    ) -> None:
        if not mean.keys() == variance.keys() == deviations.keys():
            raise ValueError("mean, variance and deviations must have the same parameter names")
        if covariance_scale < 0:
            raise ValueError(f"covariance_scale must be >= 0, got {covariance_scale}")
        ranks = {d.shape[0] for d in deviations.values()}
        if len(ranks) != 1:
            raise ValueError(
                f"every deviation tensor needs the same number of columns, got {ranks}"
            )
        for name, mu in mean.items():
            if variance[name].shape != mu.shape or deviations[name].shape[1:] != mu.shape:
                raise ValueError(f"{name}: variance/deviation shapes do not match the mean")
        self.rank = ranks.pop()
        self.mean = mean
        self.covariance_scale = covariance_scale
        root_scale = math.sqrt(covariance_scale)
        self.std = {
            n: root_scale * v.clamp_min(_VARIANCE_FLOOR).sqrt() for n, v in variance.items()
        }
        # the factors are views of the deviations (no copy of the K x P columns); the scale goes
        # on z2 instead, a K-vector
        self.low_rank_scale = root_scale / math.sqrt(max(self.rank - 1, 1))
        self.factors = {n: d.reshape(self.rank, -1) for n, d in deviations.items()}

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One weight set; every tensor shares the same low-rank draw z2.

        Each tensor of P weights costs O(P) extra memory whatever the rank: D z2 is one
        matrix-vector product into the output, to which the mean and the diagonal term are added
        in place.
        """
        any_mean = next(iter(self.mean.values()))
        kw = {"generator": generator, "device": any_mean.device, "dtype": any_mean.dtype}
        z2 = torch.randn(self.rank, **kw).mul_(self.low_rank_scale)
        out = {}
        for name, mu in self.mean.items():
            z1 = torch.randn(mu.shape, **kw)
            low_rank = (z2 @ self.factors[name]).reshape(mu.shape)
            out[name] = low_rank.add_(mu).addcmul_(self.std[name], z1)
        return out


class SWAGCollector:
    """Accumulates SWAG's moments from iterates of `model`; call `collect()` once per epoch.

    Args:
        model: the network being trained (read, never modified).
        max_rank: K, the number of most recent deviation columns kept (20 in SWAG).
        param_filter: `(name, owning module, parameter) -> bool`; default all trainable ones.

    State is float32 whatever the parameters' dtype. Parameters are named and deduplicated as
    by `tradi.plumbing.structure` (wrappers looked through, tied tensors once), like the tracker's.
    """

    def __init__(
        self, model: nn.Module, *, max_rank: int = 20, param_filter: ParamFilter | None = None
    ) -> None:
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        keep = param_filter or all_trainable
        named = [(n, p) for n, m, p in named_parameters_with_owner(model) if keep(n, m, p)]
        if not named:
            raise ValueError("no parameter of the model is selected for SWAG")
        self.max_rank = max_rank
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self.num_collected = 0
        self._mean = [torch.zeros_like(p, dtype=torch.float32) for p in self._params]
        self._sq_mean = [torch.zeros_like(p, dtype=torch.float32) for p in self._params]
        # a ring of K deviation columns per tensor, written in place: collecting costs no
        # memory beyond this state (a growing torch.cat copied all K columns at every iterate)
        self._ring = [p.new_zeros((max_rank, *p.shape), dtype=torch.float32) for p in self._params]

    @torch.no_grad()
    def collect(self) -> None:
        """Add the model's current weights as one iterate (in place: O(1) extra memory)."""
        weight = 1.0 / (self.num_collected + 1)
        slot = self.num_collected % self.max_rank
        for param, mean, sq_mean, ring in zip(
            self._params, self._mean, self._sq_mean, self._ring, strict=True
        ):
            w = param.detach().float()
            mean.lerp_(w, weight)
            sq_mean.mul_(1 - weight).addcmul_(w, w, value=weight)
            torch.sub(w, mean, out=ring[slot])
        self.num_collected += 1

    def _ordered(self, ring: Tensor) -> Tensor:
        """The collected columns of one ring, oldest first (a copy)."""
        if self.num_collected <= self.max_rank:
            return ring[: self.num_collected].clone()
        return ring.roll(-(self.num_collected % self.max_rank), dims=0)

    def mean(self) -> dict[str, Tensor]:
        """The SWA mean {name: float32 tensor} (copies)."""
        return {n: t.clone() for n, t in zip(self.names, self._mean, strict=True)}

    def variance(self) -> dict[str, Tensor]:
        """Diagonal variance E[w^2] - E[w]^2, clamped at 0 against rounding."""
        return {
            n: (sq - m * m).clamp_min(0)
            for n, sq, m in zip(self.names, self._sq_mean, self._mean, strict=True)
        }

    def deviations(self) -> dict[str, Tensor]:
        """The deviation columns {name: [K, *shape]}, oldest first (copies)."""
        return {n: self._ordered(r) for n, r in zip(self.names, self._ring, strict=True)}

    def posterior(self, covariance_scale: float = 0.5) -> SWAGPosterior:
        """The SWAG Gaussian of what was collected (needs at least one iterate)."""
        if self.num_collected == 0:
            raise ValueError("SWAG collected no iterate: did training reach its start epoch?")
        return SWAGPosterior(
            self.mean(), self.variance(), self.deviations(), covariance_scale=covariance_scale
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "max_rank": self.max_rank,
            "num_collected": self.num_collected,
            "mean": [t.clone() for t in self._mean],
            "sq_mean": [t.clone() for t in self._sq_mean],
            "deviations": [self._ordered(r) for r in self._ring],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["names"] != self.names or state["max_rank"] != self.max_rank:
            raise ValueError("SWAG state does not match this collector (parameter names or rank)")
        if any(s.shape != m.shape for s, m in zip(state["mean"], self._mean, strict=True)):
            raise ValueError("SWAG state has shapes that do not match the model")
        devices = [m.device for m in self._mean]
        self.num_collected = int(state["num_collected"])
        self._mean = [t.to(d) for t, d in zip(state["mean"], devices, strict=True)]
        self._sq_mean = [t.to(d) for t, d in zip(state["sq_mean"], devices, strict=True)]
        for ring, columns in zip(self._ring, state["deviations"], strict=True):
            ring.zero_()
            # oldest first in the state; the oldest column sits at slot num_collected % K
            shift = self.num_collected % self.max_rank if len(columns) == self.max_rank else 0
            ring[: len(columns)] = columns.to(ring.device).roll(shift, dims=0)
