"""Prediction by averaging one network over sampled weight sets (TRADI.md eq. 6).

P(y | x) = mean_j softmax(f(x; w~_j)). Every sampling method (TRADI, SWAG, Gaussian perturbation)
predicts through `SampledEnsemble`, which evaluates the weight sets with
`torch.func.functional_call` on its own copy of the model, so the user's model is never touched.

The weight sets are evaluated batched: their tensors are stacked ([n, *shape]) and
`torch.func.vmap` maps one `functional_call` over them, `chunk_size` sets at a time, which turns
n small forward passes into one batched pass (one batched matmul per layer instead of n). A model
vmap cannot trace (data-dependent control flow, `.item()`, in-place writes to buffers, random ops
in eval mode) falls back to a plain loop over the weight sets; the choice is made once, at the
first prediction, and kept. The weight sets themselves (seeded draws, the cache, per-sample
BatchNorm statistics, chunks) are a `tradi.inference.weight_sets.WeightSets`.

Batches and outputs of any structure are read through a `ModelIO` (``io=``); wrapped models
(DDP, DataParallel, torch.compile, ...) are evaluated unwrapped, with parameters named as
`tradi.plumbing.structure` names them (tied tensors once). ``task="regression"`` gives the predictive
mean and variance instead of class probabilities (`tradi.inference.regression`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import vmap

from tradi.inference.batchnorm import (
    DEFAULT_BN_BATCHES,
    FirstBatches,
    bn_modules,
    sampled_bn_statistics,
)
from tradi.inference.batchnorm import (
    update_bn_stats as update_bn_stats,
)  # public here before the split
from tradi.inference.regression import GaussianPrediction, mixture_moments
from tradi.inference.trunk import TrunkCache, sampled_parameter_names
from tradi.inference.weight_sets import WeightSets
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.structure import evaluation_copy
from tradi.posterior import WeightPosterior, load_posterior

logger = logging.getLogger(__name__)

Average = Literal["probs", "logits"]
Batching = Literal["auto", "vmap", "loop"]
Task = Literal["classification", "regression"]


def _prefers_loop(device: torch.device) -> bool:
    """Whether batching="auto" takes the loop at once, without trying vmap: on the CPU the loop
    measured as fast as vmap or faster (benchmarks/bench_inference.py, bench_segmentation.py:
    vmap turns convolutions into grouped ones) and needs no memory for stacked activations."""
    return device.type == "cpu"


class SampledEnsemble:
    """An ensemble of `n_samples` weight sets drawn from `posterior`, evaluated on a model copy.

    Args:
        model: the trained network, wrapped or not (copied with its wrappers removed; the
            original is never modified).
        posterior: draws weight sets {name: tensor}, named as `tradi.plumbing.structure` names the
            parameters (tied tensors once); names it omits keep the model's values.
        n_samples: ensemble size (20 in the paper's code).
        average: "probs" averages softmax probabilities (the paper, eq. 6); "logits" averages
            logits before one softmax (the public code; offered only for comparison).
        bn_loader: if given, BatchNorm running statistics are re-estimated for each sample on
            this loader (training data), as SWAG does and the public code does for TRADI, in
            one pass over it for all the samples (`tradi.inference.batchnorm`; ``cache=False``: one pass
            per `chunk_size` samples), looped or vmapped like prediction.
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
        sample_modules: names of modules (as the unwrapped model's `named_modules()` gives
            them, e.g. ``["classifier"]``) whose parameters are sampled; every other parameter keeps its
            trained value (the posterior's marginal on the chosen parameters). The trunk in
            front of the first sampled module is then evaluated once per input and only the
            rest once per weight set (`tradi.inference.trunk`); BatchNorm statistics are re-estimated only
            for the layers after the trunk. None (default): everything the posterior returns.
        bn_batches: re-estimate BatchNorm statistics on the first `bn_batches` batches of
            `bn_loader` only (default 30: on the paper's MLP its validation NLL matched the
            whole loader's within noise, docs/inference.md; None: all of it); the build cost
            is proportional to it.

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
        sample_modules: Sequence[str] | None = None,
        bn_batches: int | None = DEFAULT_BN_BATCHES,
        task: Task = "classification",
        io: ModelIO = DEFAULT_IO,
    ) -> None:
        _check_options(n_samples, average, batching, chunk_size, bn_batches, task)
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
        self.seed = seed
        self.sample_modules = None if sample_modules is None else tuple(sample_modules)
        sampled = None
        self._trunk: TrunkCache | None = None
        if self.sample_modules is not None:
            sampled = sampled_parameter_names(self.model, self.sample_modules)
            self._trunk = TrunkCache(self.model, sampled)
        self._tied = _has_ties(self.model)
        self._sets = WeightSets(
            self.model,
            posterior,
            n_samples,
            seed=seed,
            cache=cache,
            sampled=sampled,
            sample_modules=self.sample_modules,
        )
        if bn_loader is not None and bn_modules(self.model):
            if bn_batches is not None:
                bn_loader = FirstBatches(bn_loader, bn_batches)
            self._sets.set_buffers(self._bn_statistics(bn_loader))

    def _bn_statistics(self, loader: Iterable[Any]) -> dict[str, Tensor]:
        """Every weight set's BatchNorm statistics on `loader`, stacked [n_samples, ...]
        (`tradi.inference.batchnorm.sampled_bn_statistics`): one pass over the loader for all the sets
        when they are cached, else one per `chunk_size` sets (drawn as they are needed)."""
        stacked = self._sets.stacked
        groups = [stacked] if stacked is not None else self._sets.chunks(self.chunk_size)
        parts = [
            sampled_bn_statistics(
                self.model,
                (to_device(self.io.inputs(batch), self.device) for batch in loader),
                group,
                self._functional,
                batching=self.batching,
                chunk_size=self.chunk_size,
                trunk=self._trunk,
            )
            for group in groups
        ]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def _functional(self, tensors: dict[str, Tensor], x: Any) -> Any:
        """The model's output with `tensors` in place of its own (ties looked for only if any)."""
        return self.io.functional_forward(self.model, tensors, x, tie_weights=self._tied)

    def _forward(self, tensors: dict[str, Tensor], x: Any) -> tuple[Tensor, ...]:
        """One weight set's prediction: (logits,), (mean,) or (mean, variance)."""
        output = self._functional(tensors, x)
        if self.task == "classification":
            return (self.io.logits(output),)
        mean, variance = self.io.regression(output)
        return (mean,) if variance is None else (mean, variance)

    def _chunks_vmap(self, x: Any) -> Iterator[tuple[Tensor, ...]]:
        batched = vmap(lambda tensors: self._forward(tensors, x), randomness="error")
        for chunk in self._sets.chunks(self.chunk_size):
            yield batched(chunk)

    def _chunks_loop(self, x: Any) -> Iterator[tuple[Tensor, ...]]:
        for index, weights in enumerate(self._sets):
            yield tuple(part[None] for part in self._forward(self._sets.tensors(index, weights), x))

    @torch.no_grad()
    def _output_chunks(self, x: Any) -> Iterator[tuple[Tensor, ...]]:
        """The weight sets' predictions, a group at a time in sample order, each part [k, N, ...]
        (k: 1 looped, `chunk_size` vmapped); with `sample_modules` the trunk is recorded once on
        `x` and replayed for every set. Consumers that reduce over the samples (``ens(x)``)
        never hold more than one group's outputs."""
        x = to_device(x, self.device)
        with contextlib.ExitStack() as stack:
            if self._trunk is not None:
                trunk = self._trunk.record(lambda: self.io.forward(self.model, x))
                stack.enter_context(self._trunk.replay(trunk))
            yield from self._evaluate(x)

    def _evaluate(self, x: Any) -> Iterator[tuple[Tensor, ...]]:
        if self.batching_used == "loop":
            return self._chunks_loop(x)
        chunks = self._chunks_vmap(x)
        if self.batching_used == "vmap":
            return chunks
        try:
            first = next(chunks)
        except Exception as error:  # any failure to trace: the loop is always correct
            chunks = self._chunks_loop(x)
            first = next(chunks)  # a genuine input error raises here, undecided
            logger.info("SampledEnsemble: vmap failed (%s); evaluating samples in a loop", error)
            self.batching_used = "loop"
        else:
            self.batching_used = "vmap"
        return itertools.chain([first], chunks)

    def _sample_outputs(self, x: Any) -> tuple[Tensor, ...]:
        """Every weight set's prediction, each part stacked [n_samples, N, ...]."""
        return tuple(torch.cat(parts) for parts in zip(*self._output_chunks(x), strict=True))

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
        return _class_logits(self._sample_outputs(x)[0])

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
        `GaussianPrediction` (mean, variance), each [N, ...] (`tradi.inference.regression`).

        Classification sums the softmaxes (or logits) group by group as the weight sets are
        evaluated, so the n_samples outputs are never held at once."""
        if self.task == "regression":
            return mixture_moments(*self.sample_regression(x))
        total: Tensor | None = None
        for (logits,) in self._output_chunks(x):
            part = _class_logits(logits)
            part = part if self.average == "logits" else part.softmax(dim=2)
            part = part.sum(0) if total is None or len(part) > 1 else part[0]
            total = part if total is None else total.add_(part)
        assert total is not None  # n_samples >= 1
        mean = total / self.n_samples
        return mean.softmax(dim=1) if self.average == "logits" else mean

    def predict(self, loader: Iterable[Any]) -> Tensor:
        """Per-sample probabilities over a whole loader: [n_samples, N, C, ...] (on the CPU)."""
        return torch.cat([self.sample_probs(self.io.inputs(b)).cpu() for b in loader], dim=1)

    def state_dict(self) -> dict[str, Any]:
        """Everything that rebuilds this ensemble, training data not needed.

        The network's state, the posterior's, the ensemble size, seed, averaging, sampled
        modules and the per-sample BatchNorm statistics; plain tensors, numbers and strings,
        so `torch.load(path, weights_only=True)` reads it. Rebuild with `from_state_dict`.

        Raises:
            TypeError: the posterior has no ``state_dict`` (a custom one).
        """
        if not callable(getattr(self.posterior, "state_dict", None)):
            raise TypeError(
                f"{type(self.posterior).__name__} has no state_dict(): only tradi's posteriors "
                "(tradi.posterior.StatefulPosterior) can be saved"
            )
        return {
            "model": self.model.state_dict(),
            "posterior": self.posterior.state_dict(),  # type: ignore[attr-defined]
            "n_samples": self.n_samples,
            "seed": self.seed,
            "average": self.average,
            "task": self.task,
            "sample_modules": None if self.sample_modules is None else list(self.sample_modules),
            "bn_buffers": self._sets.stacked_buffers,
        }

    @classmethod
    def from_state_dict(
        cls, model: nn.Module, state: dict[str, Any], **options: Any
    ) -> SampledEnsemble:
        """The ensemble `state_dict` saved, on a network of the same architecture as `model`.

        `model`'s weights are replaced by the saved ones (on a copy); it draws the same weight
        sets and predicts the same probabilities as the saved ensemble. ``options`` are the
        evaluation settings (``batching``, ``chunk_size``, ``cache``, ``io``: a `ModelIO` holds
        functions, which a weights-only state cannot).
        """
        model = evaluation_copy(model)
        model.load_state_dict(state["model"])
        ensemble = cls(
            model,
            load_posterior(state["posterior"]),
            state["n_samples"],
            average=state["average"],
            seed=state["seed"],
            sample_modules=state["sample_modules"],
            task=state["task"],
            **options,
        )
        buffers = state["bn_buffers"]
        if buffers is not None:
            ensemble._sets.set_buffers({n: t.to(ensemble.device) for n, t in buffers.items()})
        return ensemble


def _has_ties(model: nn.Module) -> bool:
    """Whether a tensor of `model` is registered under two names (a tied weight or buffer)."""
    return any(
        len(list(named(remove_duplicate=False))) != len(list(named()))
        for named in (model.named_parameters, model.named_buffers)
    )


def _class_logits(logits: Tensor) -> Tensor:
    """`logits` [k, N, C, ...] as they are; a ValueError if there is no class dimension."""
    if logits.dim() < 3 or logits.shape[2] == 1:
        raise ValueError(
            f"the model gives outputs of shape {tuple(logits.shape[1:])}, with no class "
            "dimension of size >= 2 at dim 1: a softmax over one output is always 1. For "
            "regression build SampledEnsemble(..., task='regression'); for binary "
            "classification give the model 2 outputs"
        )
    return logits


def _check_options(
    n_samples: int,
    average: str,
    batching: str,
    chunk_size: int | None,
    bn_batches: int | None,
    task: str,
) -> None:
    """`SampledEnsemble`'s settings checked before any work; a ValueError names the bad one."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if average not in ("probs", "logits"):
        raise ValueError(f"average must be 'probs' or 'logits', got {average!r}")
    if batching not in ("auto", "vmap", "loop"):
        raise ValueError(f"batching must be 'auto', 'vmap' or 'loop', got {batching!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None: all samples), got {chunk_size}")
    if bn_batches is not None and bn_batches < 1:
        raise ValueError(f"bn_batches must be >= 1 (or None: the whole loader), got {bn_batches}")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
