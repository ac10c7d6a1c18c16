"""Prediction by averaging one network over sampled weight sets (TRADI.md eq. 6).

P(y | x) = mean_j softmax(f(x; w~_j)). Every sampling method (TRADI, SWAG, Gaussian perturbation)
predicts through `SampledEnsemble`, which evaluates the weight sets with
`torch.func.functional_call` on its own copy of the model, so the user's model is never touched.

The weight sets are evaluated batched: their tensors are stacked ([n, *shape]) and
`torch.func.vmap` maps one `functional_call` over them, `chunk_size` sets at a time, which turns
n small forward passes into one batched pass (one batched matmul per layer instead of n). A model
vmap cannot trace (data-dependent control flow, `.item()`, in-place writes to buffers, random ops
in eval mode) falls back to a plain loop over the weight sets; the choice is made once, at the
first prediction, and kept.

Batches and outputs of any structure are read through a `ModelIO` (``io=``); wrapped models
(DDP, DataParallel, torch.compile, ...) are evaluated unwrapped, with parameters named as
`tradi.structure` names them (tied tensors once). ``task="regression"`` gives the predictive
mean and variance instead of class probabilities (`tradi.regression`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import vmap

from tradi.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.posterior import WeightPosterior
from tradi.regression import GaussianPrediction, mixture_moments
from tradi.structure import evaluation_copy, named_parameters_with_owner, unwrap

logger = logging.getLogger(__name__)

Average = Literal["probs", "logits"]
Batching = Literal["auto", "vmap", "loop"]
Task = Literal["classification", "regression"]


def _prefers_loop(device: torch.device) -> bool:
    """Whether batching="auto" takes the loop at once, without trying vmap.

    On the CPU the loop measured as fast as vmap or faster (benchmarks/bench_inference.py and
    bench_segmentation.py, one thread: 20-sample cost over 20 plain passes MLP 1.04 looped vs
    1.26 under vmap, ENet 1.15 vs 1.5-1.8: vmap turns convolutions into grouped ones), and it
    needs no memory for stacked activations. On accelerators vmap's larger kernels pay.
    """
    return device.type == "cpu"


def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def update_bn_stats(
    model: nn.Module,
    loader: Iterable[Any],
    parameters: dict[str, Tensor] | None = None,
    device: torch.device | str | None = None,
    *,
    io: ModelIO = DEFAULT_IO,
) -> None:
    """Re-estimate BatchNorm running statistics, like `torch.optim.swa_utils.update_bn`.

    With `parameters`, the forward passes use those weights (through functional_call) instead of
    the model's own: this is how each sampled weight set gets statistics that match it.
    The statistics are a cumulative average over one pass of `loader`; mode and momenta are
    restored. `io.inputs` reads each batch (a `TypeError` names ``inputs_fn`` for a batch it
    cannot read); a wrapped `model` is looked through (`tradi.structure.unwrap`).
    """
    model = unwrap(model)
    bns = _bn_modules(model)
    if not bns:
        return
    momenta = {bn: bn.momentum for bn in bns}
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    try:
        for batch in loader:
            x = io.inputs(batch)
            if device is not None:
                x = to_device(x, device)
            if parameters is None:
                io.forward(model, x)
            else:
                io.functional_forward(model, parameters, x)
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def _bn_stats_vmap(
    model: nn.Module,
    loader: Iterable[Any],
    stacked: dict[str, Tensor],
    device: torch.device,
    io: ModelIO,
) -> dict[str, Tensor]:
    """`update_bn_stats` for k weight sets at once (`stacked`: [k, ...] tensors), in one pass.

    The running statistics are stacked [k, C] and updated in place under vmap; the batch
    counter stays shared (every set sees the same batches), so the cumulative average's factor
    1 / count is a plain number. Dropout draws different masks for different sets.
    """
    k = next(iter(stacked.values())).shape[0]
    tracked = {
        name: bn
        for name, bn in model.named_modules()
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None
    }
    momenta = {bn: bn.momentum for bn in tracked.values()}
    was_training = model.training
    stats: dict[str, Tensor] = {}
    for name, bn in tracked.items():
        bn.reset_running_stats()
        bn.momentum = None
        stats[f"{name}.running_mean"] = bn.running_mean.expand(k, -1).clone()
        stats[f"{name}.running_var"] = bn.running_var.expand(k, -1).clone()  # type: ignore[union-attr]

    def forward(tensors: dict[str, Tensor], x: Any) -> Tensor:
        io.functional_forward(model, tensors, x)  # the output may be any structure: unused
        return torch.zeros(())

    batched = vmap(forward, in_dims=(0, None), randomness="different")
    model.train()
    try:
        for batch in loader:
            batched({**stacked, **stats}, to_device(io.inputs(batch), device))
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        model.train(was_training)
    for name, bn in tracked.items():
        if bn.num_batches_tracked is not None:
            stats[f"{name}.num_batches_tracked"] = bn.num_batches_tracked.expand(k).clone()
    return stats


class SampledEnsemble:
    """An ensemble of `n_samples` weight sets drawn from `posterior`, evaluated on a model copy.

    Args:
        model: the trained network, wrapped or not (copied with its wrappers removed; the
            original is never modified).
        posterior: draws weight sets {name: tensor}, named as `tradi.structure` names the
            parameters (tied tensors once); names it omits keep the model's values.
        n_samples: ensemble size (20 in the paper's code).
        average: "probs" averages softmax probabilities (the paper, eq. 6); "logits" averages
            logits before one softmax (the public code; offered only for comparison).
        bn_loader: if given, BatchNorm running statistics are re-estimated for each sample on
            this loader (training data), as SWAG does and the public code does for TRADI;
            batched like prediction, `chunk_size` weight sets per pass over the loader.
        seed: the weight sets are a deterministic function of `seed`.
        cache: keep the drawn weight sets in memory (n_samples copies of the sampled tensors)
            rather than redrawing them for each batch; turn off for very large models.
        batching: "vmap" evaluates `chunk_size` weight sets at once with torch.func.vmap;
            "loop" one after another; "auto" (default) tries vmap at the first prediction and
            falls back to the loop for good if the model cannot be vmapped; on the CPU it takes
            the loop at once (measured no slower there; see `_prefers_loop`).
        chunk_size: weight sets per vmapped pass; None: all at once. Peak activation memory
            is about chunk_size times that of one forward pass: the default 8 keeps most of
            vmap's speed-up on the MLP while bounding memory (benchmarks/bench_inference.py).
        task: "classification" (class probabilities) or "regression": ``ens(x)`` is then a
            `GaussianPrediction` (mean, variance) over the samples; with a Gaussian head
            (output ``(mean, variance)``) the variance adds the heads' aleatoric part.
        io: how loader batches become model inputs and which output holds the logits (or the
            regression mean and variance): `tradi.ModelIO`.

    Inputs ``x`` are model inputs as `ModelIO` defines them (a tensor, a tuple of positional
    or a dict of keyword arguments). Class dimension is 1: outputs are [N, C] or dense
    [N, C, H, W]; a classification model with a single output raises a ValueError at the first
    prediction. `batching_used` tells, after the first prediction, which evaluation was chosen.
    """

    def __init__(
        self,
        model: nn.Module,
        posterior: WeightPosterior,
        n_samples: int = 20,
        *,
        average: Average = "probs",
        bn_loader: Iterable[Any] | None = None,
        seed: int = 0,
        cache: bool = True,
        batching: Batching = "auto",
        chunk_size: int | None = 8,
        task: Task = "classification",
        io: ModelIO = DEFAULT_IO,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if average not in ("probs", "logits"):
            raise ValueError(f"average must be 'probs' or 'logits', got {average!r}")
        if batching not in ("auto", "vmap", "loop"):
            raise ValueError(f"batching must be 'auto', 'vmap' or 'loop', got {batching!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (or None: all samples), got {chunk_size}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.task: Task = task
        self.io = io
        self.model = evaluation_copy(model).eval()
        self.device = next(self.model.parameters()).device
        if batching == "auto" and _prefers_loop(self.device):
            batching = "loop"
        self.posterior = posterior
        self.n_samples = n_samples
        self.average: Average = average
        self.cache = cache
        self.batching: Batching = batching
        self.chunk_size = chunk_size or n_samples
        self.batching_used: Literal["vmap", "loop"] | None = (
            None if batching == "auto" else batching
        )
        seeds = torch.randint(2**62, (n_samples,), generator=torch.Generator().manual_seed(seed))
        self._seeds = [int(s) for s in seeds]
        # tradi's names (tracker, posteriors) -> the copy's own, which keep a user wrapper's prefix
        named = list(self.model.named_parameters())
        self._names = {
            name: own
            for (name, _, _), (own, _) in zip(
                named_parameters_with_owner(self.model), named, strict=True
            )
        }
        self._dtypes = {own: p.dtype for own, p in named}
        # stacked [n_samples, *shape] tensors; the per-sample lists hold views into them
        self._stacked: dict[str, Tensor] | None = None
        self._cached: list[dict[str, Tensor]] | None = None
        self._stacked_buffers: dict[str, Tensor] | None = None
        self._buffers: list[dict[str, Tensor]] | None = None
        if cache:
            self._stacked = _stack(list(self._weight_sets()))
            self._cached = _unstack(self._stacked, n_samples)
        if bn_loader is not None and _bn_modules(self.model):
            self._stacked_buffers = self._bn_statistics(bn_loader)
            self._buffers = _unstack(self._stacked_buffers, n_samples)

    def _bn_statistics(self, loader: Iterable[Any]) -> dict[str, Tensor]:
        """Every weight set's BatchNorm statistics on `loader`, stacked [n_samples, ...].

        Chunks of weight sets share each pass over the loader under vmap; a model vmap cannot
        trace in training mode falls back to one pass per weight set (batching="auto").
        """
        if self.batching != "loop":
            try:
                chunks = [
                    _bn_stats_vmap(self.model, loader, chunk, self.device, self.io)
                    for chunk in self._stacked_chunks()
                ]
                return {n: torch.cat([c[n] for c in chunks]) for n in chunks[0]}
            except Exception as error:
                if self.batching == "vmap":
                    raise
                logger.info("SampledEnsemble: BatchNorm update under vmap failed (%s)", error)
        per_sample = []
        for weights in self._weight_sets():
            update_bn_stats(self.model, loader, weights, self.device, io=self.io)
            per_sample.append({n: b.clone() for n, b in self.model.named_buffers()})
        return _stack(per_sample)

    def _draw(self, index: int) -> dict[str, Tensor]:
        generator = torch.Generator(device=self.device).manual_seed(self._seeds[index])
        sample = self.posterior.sample(generator)
        unknown = sample.keys() - self._names.keys()
        if unknown:
            raise KeyError(
                f"posterior returned names that are not model parameters: {sorted(unknown)}; "
                "parameters are named as named_parameters() names them on the model without "
                "its wrappers, tied tensors once under their first name (tradi.structure)"
            )
        own = self._names
        return {own[n]: w.to(self.device, self._dtypes[own[n]]) for n, w in sample.items()}

    def _weight_sets(self) -> Iterator[dict[str, Tensor]]:
        if self._cached is not None:
            yield from self._cached
        else:
            for index in range(self.n_samples):
                yield self._draw(index)

    def _tensors(self, index: int, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Everything sample `index` replaces in the model: its weights and BN statistics."""
        return weights if self._buffers is None else {**weights, **self._buffers[index]}

    def _stacked_chunks(self) -> Iterator[dict[str, Tensor]]:
        """The weight sets `chunk_size` at a time, stacked along a new first dimension."""
        for start in range(0, self.n_samples, self.chunk_size):
            stop = min(start + self.chunk_size, self.n_samples)
            if self._stacked is not None:
                chunk = {n: t[start:stop] for n, t in self._stacked.items()}
            else:
                chunk = _stack([self._draw(index) for index in range(start, stop)])
            if self._stacked_buffers is not None:
                chunk.update({n: t[start:stop] for n, t in self._stacked_buffers.items()})
            yield chunk

    def _forward(self, tensors: dict[str, Tensor], x: Any) -> tuple[Tensor, ...]:
        """One weight set's prediction: (logits,), (mean,) or (mean, variance)."""
        output = self.io.functional_forward(self.model, tensors, x)
        if self.task == "classification":
            return (self.io.logits(output),)
        mean, variance = self.io.regression(output)
        return (mean,) if variance is None else (mean, variance)

    def _outputs_vmap(self, x: Any) -> tuple[Tensor, ...]:
        batched = vmap(lambda tensors: self._forward(tensors, x), randomness="error")
        chunks = [batched(chunk) for chunk in self._stacked_chunks()]
        return tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))

    def _outputs_loop(self, x: Any) -> tuple[Tensor, ...]:
        outputs = [
            self._forward(self._tensors(index, weights), x)
            for index, weights in enumerate(self._weight_sets())
        ]
        return tuple(torch.stack(parts) for parts in zip(*outputs, strict=True))

    @torch.no_grad()
    def _sample_outputs(self, x: Any) -> tuple[Tensor, ...]:
        """Every weight set's prediction, each part stacked [n_samples, N, ...]."""
        x = to_device(x, self.device)
        if self.batching_used == "loop":
            return self._outputs_loop(x)
        if self.batching_used == "vmap":
            return self._outputs_vmap(x)
        try:
            outputs = self._outputs_vmap(x)
        except Exception as error:  # any failure to trace: the loop is always correct
            outputs = self._outputs_loop(x)  # a genuine input error raises here, undecided
            logger.info("SampledEnsemble: vmap failed (%s); evaluating samples in a loop", error)
            self.batching_used = "loop"
            return outputs
        self.batching_used = "vmap"
        return outputs

    def _require_task(self, task: Task, instead: str) -> None:
        if self.task != task:
            raise ValueError(f"this ensemble was built with task={self.task!r}: use {instead}")

    def sample_logits(self, x: Any) -> Tensor:
        """Logits of every weight set: [n_samples, N, C, ...] (classification).

        Raises:
            ValueError: the ensemble is a regression one, or the model gives one output per
                input (a softmax over one class is always 1).
        """
        self._require_task("classification", "ens(x) or sample_regression(x)")
        logits = self._sample_outputs(x)[0]
        if logits.dim() < 3 or logits.shape[2] == 1:
            raise ValueError(
                f"the model gives outputs of shape {tuple(logits.shape[1:])}, with no class "
                "dimension of size >= 2 at dim 1: a softmax over one output is always 1. For "
                "regression build SampledEnsemble(..., task='regression'); for binary "
                "classification give the model 2 outputs"
            )
        return logits

    def sample_regression(self, x: Any) -> tuple[Tensor, Tensor | None]:
        """Every weight set's predicted mean [n_samples, N, ...] and variance (or None when the
        model predicts a mean only) (task="regression")."""
        self._require_task("regression", "ens(x), sample_probs(x) or sample_logits(x)")
        outputs = self._sample_outputs(x)
        return outputs[0], (outputs[1] if len(outputs) == 2 else None)

    def sample_probs(self, x: Any) -> Tensor:
        """Softmax probabilities of every weight set: [n_samples, N, C, ...]."""
        return self.sample_logits(x).softmax(dim=2)

    def __call__(self, x: Any) -> Tensor | GaussianPrediction:
        """The predictive probabilities [N, C, ...]; for task="regression" the predictive
        `GaussianPrediction` (mean, variance), each [N, ...] (`tradi.regression`)."""
        if self.task == "regression":
            return mixture_moments(*self.sample_regression(x))
        logits = self.sample_logits(x)
        if self.average == "logits":
            return logits.mean(0).softmax(dim=1)
        return logits.softmax(dim=2).mean(0)

    def predict(self, loader: Iterable[Any]) -> Tensor:
        """Per-sample probabilities over a whole loader: [n_samples, N, C, ...] (on the CPU)."""
        return torch.cat([self.sample_probs(self.io.inputs(b)).cpu() for b in loader], dim=1)


def _stack(weight_sets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {n: torch.stack([w[n] for w in weight_sets]) for n in weight_sets[0]}


def _unstack(stacked: dict[str, Tensor], n: int) -> list[dict[str, Tensor]]:
    return [{name: t[index] for name, t in stacked.items()} for index in range(n)]
