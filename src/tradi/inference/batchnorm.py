"""BatchNorm running statistics re-estimated for sampled weight sets (TRADI.md §3, as SWAG).

A sampled weight set shifts the activations each BatchNorm layer sees, so its running statistics
are re-estimated on training data, as `torch.optim.swa_utils.update_bn` does: train mode, a
cumulative average (momentum None) over one pass of the loader, each batch contributing its mean
and unbiased variance. `update_bn_stats` does it for one weight set; `sampled_bn_statistics`
for n weight sets in ONE pass over the loader: each batch is read (and moved to the device) once
and every weight set runs on it, one after another or `chunk_size` at a time under
`torch.func.vmap`. Every set therefore sees the same batches; dropout, in train mode as during
training, draws its own masks for each set.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import vmap

from tradi.inference.trunk import TrunkCache
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.modes import preserved_modes
from tradi.plumbing.structure import unwrap

logger = logging.getLogger(__name__)

BatchNorm = nn.modules.batchnorm._BatchNorm
#: `SampledEnsemble`'s and the sampling methods' default ``bn_batches``: the statistics come from
#: the first 30 batches of the training loader (docs/inference.md: the validation study).
DEFAULT_BN_BATCHES = 30


class FirstBatches:
    """The first `count` (>= 1) batches of `loader`, on every pass (a shuffling loader
    reshuffles: each pass takes the first `count` of its new order)."""

    def __init__(self, loader: Iterable[Any], count: int) -> None:
        self.loader, self.count = loader, count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.loader, self.count)


def bn_modules(model: nn.Module) -> list[BatchNorm]:
    """Every BatchNorm layer of `model` (any dimension), in `modules()` order."""
    return [m for m in model.modules() if isinstance(m, BatchNorm)]


def _tracked(model: nn.Module, skip: Iterable[str] = ()) -> dict[str, BatchNorm]:
    """The BatchNorm layers that keep running statistics, by name, less those in `skip`."""
    skipped = set(skip)
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, BatchNorm) and m.running_mean is not None and name not in skipped
    }


@contextlib.contextmanager
def _cumulative(model: nn.Module, bns: Iterable[BatchNorm]) -> Iterator[None]:
    """Train mode and momentum None (a cumulative average) for the block; both restored, the
    mode of every submodule as it was (`tradi.plumbing.modes.preserved_modes`)."""
    momenta = {bn: bn.momentum for bn in bns}
    for bn in momenta:
        bn.momentum = None
    try:
        with preserved_modes(model):
            model.train()
            yield
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    loader: Iterable[Any],
    parameters: dict[str, Tensor] | None = None,
    device: torch.device | str | None = None,
    *,
    io: ModelIO = DEFAULT_IO,
) -> None:
    """Re-estimate `model`'s BatchNorm running statistics in place, like
    `torch.optim.swa_utils.update_bn`.

    With `parameters` ({name: tensor} as `named_parameters` names them), the forward passes use
    those weights (through functional_call) instead of the model's own. The statistics are a
    cumulative average over one pass of `loader`; mode and momenta are restored. `io.inputs`
    reads each batch (a `TypeError` names ``inputs_fn`` for a batch it cannot read); a wrapped
    `model` is looked through (`tradi.plumbing.structure.unwrap`).
    """
    model = unwrap(model)
    bns = bn_modules(model)
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
    with _cumulative(model, bns):
        for batch in loader:
            x = io.inputs(batch)
            if device is not None:
                x = to_device(x, device)
            if parameters is None:
                io.forward(model, x)
            else:
                io.functional_forward(model, parameters, x)


Functional = Callable[[dict[str, Tensor], Any], Any]


@torch.no_grad()
def sampled_bn_statistics(
    model: nn.Module,
    inputs: Iterable[Any],
    weights: dict[str, Tensor],
    functional: Functional,
    *,
    batching: Literal["auto", "vmap", "loop"] = "loop",
    chunk_size: int = 8,
    trunk: TrunkCache | None = None,
) -> dict[str, Tensor]:
    """Every weight set's BatchNorm running statistics, in one pass over `inputs`.

    Args:
        model: the network ``functional`` runs (its own buffers are left as they were).
        inputs: model inputs, one per batch, on the model's device.
        weights: n weight sets stacked along a new first dimension, {name: [n, *shape]}.
        functional: ``functional(tensors, x)`` runs `model` on ``x`` with `tensors` (weights
            and buffers) in place of its own (`torch.func.functional_call`).
        batching: "loop": one weight set after another on each batch; "vmap": `chunk_size` sets
            at once; "auto": vmap, or the loop for good if vmap fails on the first batch.
        trunk: with a `TrunkCache` (``sample_modules``), the trunk runs once per batch in eval
            mode (recorded through ``functional`` with the model's own weights) and is replayed
            for every set; BatchNorm layers inside it keep the model's statistics.

    Returns:
        {buffer name: [n, ...]}: ``running_mean`` and ``running_var`` [n, C] per set, and
        ``num_batches_tracked`` [n] (the number of batches), in the dtypes and on the device of
        the model's buffers; empty if no BatchNorm layer with running statistics is left to
        re-estimate (or `inputs` is empty).

    Raises:
        Exception: whatever vmap raises with batching="vmap" (or the loop with any batching).
    """
    n = next(iter(weights.values())).shape[0]
    updater: _Updater | None = None
    with contextlib.ExitStack() as stack:
        for index, x in enumerate(inputs):
            recorded = None
            if trunk is not None:
                model.eval()
                recorded = trunk.record(lambda x=x: functional({}, x))
            if updater is None:
                bns = _tracked(model, recorded.seen if recorded is not None else ())
                if not bns:
                    return {}
                stack.enter_context(_cumulative(model, bns.values()))
                updater = _Updater(bns, n, functional, batching, chunk_size)
            model.train()
            with trunk.replay(recorded) if recorded is not None else contextlib.nullcontext():
                updater.update(weights, x, index)
    return {} if updater is None else updater.result(n)


class _Updater:
    """Stacked running statistics [n, C] of `bns`, updated batch by batch. The batch counters
    are shared by all sets (every set sees the same batches), so under vmap the cumulative
    average's factor 1 / count stays a plain number; they are set back before each call."""

    def __init__(
        self,
        bns: dict[str, BatchNorm],
        n: int,
        functional: Functional,
        batching: Literal["auto", "vmap", "loop"],
        chunk_size: int,
    ) -> None:
        self.bns, self.functional = bns, functional
        self.batching, self.chunk_size = batching, chunk_size
        self.stats = self._fresh(n)
        self.counters = {
            f"{name}.num_batches_tracked": torch.zeros_like(bn.num_batches_tracked)
            for name, bn in bns.items()
            if bn.num_batches_tracked is not None
        }

    def _fresh(self, n: int) -> dict[str, Tensor]:
        stats = {}
        for name, bn in self.bns.items():
            stats[f"{name}.running_mean"] = torch.zeros_like(bn.running_mean).expand(n, -1).clone()
            stats[f"{name}.running_var"] = torch.ones_like(bn.running_var).expand(n, -1).clone()  # type: ignore[arg-type]
        return stats

    def update(self, weights: dict[str, Tensor], x: Any, index: int) -> None:
        """Every set's statistics after batch number `index` (counted from 0), `x`."""
        if self.batching == "auto":
            try:
                self._vmapped(weights, x, index)
            except Exception as error:
                logger.info("BatchNorm re-estimation under vmap failed (%s): looping", error)
                self.stats = self._fresh(next(iter(weights.values())).shape[0])
                self.batching = "loop"
            else:
                self.batching = "vmap"
                return
        (self._vmapped if self.batching == "vmap" else self._looped)(weights, x, index)

    def _looped(self, weights: dict[str, Tensor], x: Any, index: int) -> None:
        for j in range(next(iter(weights.values())).shape[0]):
            self._count(index)
            tensors = {name: t[j] for name, t in (weights | self.stats).items()}
            self.functional(tensors | self.counters, x)

    def _vmapped(self, weights: dict[str, Tensor], x: Any, index: int) -> None:
        def forward(tensors: dict[str, Tensor], counters: dict[str, Tensor]) -> Tensor:
            self.functional(tensors | counters, x)  # the output may be any structure: unused
            return torch.zeros(())

        batched = vmap(forward, in_dims=(0, None), randomness="different")
        n = next(iter(weights.values())).shape[0]
        for start in range(0, n, self.chunk_size):
            self._count(index)
            chunk = slice(start, start + self.chunk_size)
            batched({name: t[chunk] for name, t in (weights | self.stats).items()}, self.counters)

    def _count(self, index: int) -> None:
        for counter in self.counters.values():
            counter.fill_(index)

    def result(self, n: int) -> dict[str, Tensor]:
        counts = {name: c.expand(n).clone() for name, c in self.counters.items()}
        return self.stats | counts
