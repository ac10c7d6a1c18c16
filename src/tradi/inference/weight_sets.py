"""The weight sets a `SampledEnsemble` evaluates: drawn from a posterior, kept or redrawn, served
one at a time or stacked in chunks (TRADI.md §3, eq. 5).

Set j is the posterior's draw from a generator seeded with the j-th of ``n`` seeds that
``torch.randint`` derives from the ensemble's seed, so every set is a deterministic function of
that seed and of j alone, whether the sets are cached or drawn again for each batch. Per-sample
BatchNorm statistics, once re-estimated, travel with them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from tradi.plumbing.structure import own_names
from tradi.posterior import WeightPosterior


def sample_seeds(n: int, seed: int) -> list[int]:
    """The seeds of ``n`` weight sets, a deterministic function of ``seed``: the same draws for
    every predictive built with one seed (sampled, linearized)."""
    seeds = torch.randint(2**62, (n,), generator=torch.Generator().manual_seed(seed))
    return [int(s) for s in seeds]


class WeightSets:
    """``n`` weight sets {model's own parameter name: tensor} drawn from ``posterior``.

    Args:
        model: the ensemble's own (unwrapped) copy; the sets are named as its
            ``named_parameters()`` names them, on its device, in its parameters' dtypes.
        posterior: draws {name: tensor} named as `tradi.plumbing.structure` names parameters.
        n: number of sets (>= 1).
        seed: the sets are a deterministic function of it.
        cache: keep the sets in memory, stacked [n, *shape] (``stacked``; ``cached`` holds views
            into it), rather than drawing them again at each use.
        sampled: the model's own names of the parameters to keep (None: all the posterior draws).
        sample_modules: the modules ``sampled`` comes from, for the error message.

    ``buffers`` / ``stacked_buffers``: per-set BatchNorm statistics (None: the model's own).
    """

    def __init__(
        self,
        model: nn.Module,
        posterior: WeightPosterior,
        n: int,
        *,
        seed: int,
        cache: bool,
        sampled: set[str] | None = None,
        sample_modules: Sequence[str] | None = None,
    ) -> None:
        self.posterior, self.n = posterior, n
        self.device = next(model.parameters()).device
        self.sampled, self.sample_modules = sampled, sample_modules
        self.seeds = sample_seeds(n, seed)
        # tradi's names (tracker, posteriors) -> the copy's own, which keep a user wrapper's prefix
        self.names = own_names(model)
        self.dtypes = {own: p.dtype for own, p in model.named_parameters()}
        # stacked [n, *shape] tensors; the per-set lists hold views into them
        self.stacked: dict[str, Tensor] | None = None
        self.cached: list[dict[str, Tensor]] | None = None
        self.stacked_buffers: dict[str, Tensor] | None = None
        self.buffers: list[dict[str, Tensor]] | None = None
        if cache:
            self.stacked = stack([self.draw(index) for index in range(n)])
            self.cached = unstack(self.stacked, n)

    def set_buffers(self, stacked: dict[str, Tensor] | None) -> None:
        """Per-set BatchNorm buffers, stacked [n, ...] (None or empty: the model's)."""
        self.stacked_buffers = stacked or None
        self.buffers = None if not stacked else unstack(stacked, self.n)

    def draw(self, index: int) -> dict[str, Tensor]:
        """Set number ``index``, drawn from its seed.

        Raises:
            KeyError: the posterior names a tensor that is not a parameter of the model.
            ValueError: the posterior samples no parameter of ``sample_modules``.
        """
        generator = torch.Generator(device=self.device).manual_seed(self.seeds[index])
        sample = self.posterior.sample(generator)
        unknown = sample.keys() - self.names.keys()
        if unknown:
            raise KeyError(
                f"posterior returned names that are not model parameters: {sorted(unknown)}; "
                "parameters are named as named_parameters() names them on the model without "
                "its wrappers, tied tensors once under their first name (tradi.plumbing.structure)"
            )
        own, keep = self.names, self.sampled
        weights = {
            own[n]: w.to(self.device, self.dtypes[own[n]])
            for n, w in sample.items()
            if keep is None or own[n] in keep
        }
        if not weights:
            raise ValueError(
                f"the posterior samples no parameter of sample_modules {self.sample_modules}"
            )
        return weights

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """The weight sets in order (kept, or drawn one at a time)."""
        if self.cached is not None:
            yield from self.cached
        else:
            for index in range(self.n):
                yield self.draw(index)

    def tensors(self, index: int, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Everything set `index` replaces in the model: its weights and BN statistics."""
        return weights if self.buffers is None else {**weights, **self.buffers[index]}

    def chunks(self, chunk_size: int) -> Iterator[dict[str, Tensor]]:
        """The sets `chunk_size` at a time, with their BN statistics, stacked along a new first
        dimension: {name: [k, *shape]}, k <= chunk_size."""
        for start in range(0, self.n, chunk_size):
            stop = min(start + chunk_size, self.n)
            if self.stacked is not None:
                chunk = {n: t[start:stop] for n, t in self.stacked.items()}
            else:
                chunk = stack([self.draw(index) for index in range(start, stop)])
            if self.stacked_buffers is not None:
                chunk.update({n: t[start:stop] for n, t in self.stacked_buffers.items()})
            yield chunk


def stack(weight_sets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """{name: [k, *shape]} from k sets {name: tensor} with the same names and shapes."""
    return {n: torch.stack([w[n] for w in weight_sets]) for n in weight_sets[0]}


def unstack(stacked: dict[str, Tensor], n: int) -> list[dict[str, Tensor]]:
    """The ``n`` sets of ``stacked`` ({name: [n, *shape]}), as views."""
    return [{name: t[index] for name, t in stacked.items()} for index in range(n)]
