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
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from tradi.posterior import WeightPosterior, load_posterior
from tradi.trunk import TrunkCache, sampled_parameter_names, trunk_bn_statistics

logger = logging.getLogger(__name__)

Average = Literal["probs", "logits"]
Batching = Literal["auto", "vmap", "loop"]


def _inputs(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


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
) -> None:
    """Re-estimate BatchNorm running statistics, like `torch.optim.swa_utils.update_bn`.

    With `parameters`, the forward passes use those weights (through functional_call) instead of
    the model's own: this is how each sampled weight set gets statistics that match it.
    The statistics are a cumulative average over one pass of `loader`; mode and momenta are restored.
    """
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
            x = _inputs(batch)
            if device is not None:
                x = x.to(device)
            if parameters is None:
                model(x)
            else:
                functional_call(model, parameters, (x,))
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def _bn_stats_vmap(
    model: nn.Module, loader: Iterable[Any], stacked: dict[str, Tensor], device: torch.device
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

    def forward(tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, tensors, (x,))

    batched = vmap(forward, in_dims=(0, None), randomness="different")
    model.train()
    try:
        for batch in loader:
            batched({**stacked, **stats}, _inputs(batch).to(device))
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
        model: the trained network (deep-copied; the original is never modified).
        posterior: draws weight sets {name: tensor}; names it omits keep the model's values.
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
        sample_modules: names of modules (as `model.named_modules` gives them, e.g.
            ``["classifier"]``) whose parameters are sampled; every other parameter keeps its
            trained value (the posterior's marginal on the chosen parameters). The trunk in
            front of the first sampled module is then evaluated once per input and only the
            rest once per weight set (`tradi.trunk`); BatchNorm statistics are re-estimated only
            for the layers after the trunk. None (default): everything the posterior returns.
        bn_batches: re-estimate BatchNorm statistics on the first `bn_batches` batches of
            `bn_loader` only (None: all of it); the build cost is proportional to it.

    Class dimension is 1: outputs are [N, C] or dense [N, C, H, W]. `batching_used` tells,
    after the first prediction, which evaluation was chosen.
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
        bn_batches: int | None = None,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if average not in ("probs", "logits"):
            raise ValueError(f"average must be 'probs' or 'logits', got {average!r}")
        if batching not in ("auto", "vmap", "loop"):
            raise ValueError(f"batching must be 'auto', 'vmap' or 'loop', got {batching!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (or None: all samples), got {chunk_size}")
        if bn_batches is not None and bn_batches < 1:
            raise ValueError(
                f"bn_batches must be >= 1 (or None: the whole loader), got {bn_batches}"
            )
        self.model = copy.deepcopy(model).eval()
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
        self._sampled: set[str] | None = None
        self._trunk: TrunkCache | None = None
        if self.sample_modules is not None:
            self._sampled = sampled_parameter_names(self.model, self.sample_modules)
            self._trunk = TrunkCache(self.model, self._sampled)
        seeds = torch.randint(2**62, (n_samples,), generator=torch.Generator().manual_seed(seed))
        self._seeds = [int(s) for s in seeds]
        self._dtypes = {n: p.dtype for n, p in self.model.named_parameters()}
        # stacked [n_samples, *shape] tensors; the per-sample lists hold views into them
        self._stacked: dict[str, Tensor] | None = None
        self._cached: list[dict[str, Tensor]] | None = None
        self._stacked_buffers: dict[str, Tensor] | None = None
        self._buffers: list[dict[str, Tensor]] | None = None
        if cache:
            self._stacked = _stack(list(self._weight_sets()))
            self._cached = _unstack(self._stacked, n_samples)
        if bn_loader is not None and _bn_modules(self.model):
            if bn_batches is not None:
                bn_loader = list(itertools.islice(bn_loader, bn_batches))
            self._set_buffers(self._bn_statistics(bn_loader))

    def _set_buffers(self, stacked: dict[str, Tensor] | None) -> None:
        """Per-sample BatchNorm buffers, stacked [n_samples, ...] (None or empty: the model's)."""
        self._stacked_buffers = stacked or None
        self._buffers = None if not stacked else _unstack(stacked, self.n_samples)

    def _bn_statistics(self, loader: Iterable[Any]) -> dict[str, Tensor]:
        """Every weight set's BatchNorm statistics on `loader`, stacked [n_samples, ...].

        Chunks of weight sets share each pass over the loader under vmap; a model vmap cannot
        trace in training mode falls back to one pass per weight set (batching="auto"). With
        `sample_modules`, one pass: the trunk once per batch, the rest per weight set.
        """
        if self._trunk is not None:
            batches = (_inputs(batch).to(self.device) for batch in loader)
            per_sample = trunk_bn_statistics(self._trunk, batches, list(self._weight_sets()))
            return _stack(per_sample) if per_sample[0] else {}
        if self.batching != "loop":
            try:
                chunks = [
                    _bn_stats_vmap(self.model, loader, chunk, self.device)
                    for chunk in self._stacked_chunks()
                ]
                return {n: torch.cat([c[n] for c in chunks]) for n in chunks[0]}
            except Exception as error:
                if self.batching == "vmap":
                    raise
                logger.info("SampledEnsemble: BatchNorm update under vmap failed (%s)", error)
        per_sample = []
        for weights in self._weight_sets():
            update_bn_stats(self.model, loader, weights, self.device)
            per_sample.append({n: b.clone() for n, b in self.model.named_buffers()})
        return _stack(per_sample)

    def _draw(self, index: int) -> dict[str, Tensor]:
        generator = torch.Generator(device=self.device).manual_seed(self._seeds[index])
        sample = self.posterior.sample(generator)
        if self._sampled is not None:
            sample = {n: w for n, w in sample.items() if n in self._sampled}
            if not sample:
                raise ValueError(
                    f"the posterior samples no parameter of sample_modules {self.sample_modules}"
                )
        unknown = sample.keys() - self._dtypes.keys()
        if unknown:
            raise KeyError(
                f"posterior returned names that are not model parameters: {sorted(unknown)}"
            )
        return {n: w.to(self.device, self._dtypes[n]) for n, w in sample.items()}

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

    def _logits_vmap(self, x: Tensor) -> Tensor:
        def forward(tensors: dict[str, Tensor]) -> Tensor:
            return functional_call(self.model, tensors, (x,))

        batched = vmap(forward, randomness="error")
        return torch.cat([batched(chunk) for chunk in self._stacked_chunks()])

    def _logits_loop(self, x: Tensor) -> Tensor:
        return torch.stack(
            [
                functional_call(self.model, self._tensors(index, weights), (x,))
                for index, weights in enumerate(self._weight_sets())
            ]
        )

    @torch.no_grad()
    def sample_logits(self, x: Tensor) -> Tensor:
        """Logits of every weight set: [n_samples, N, C, ...]."""
        x = x.to(self.device)
        if self._trunk is None:
            return self._sample_logits(x)
        with self._trunk.replay(self._trunk.record(x)):
            return self._sample_logits(x)

    def _sample_logits(self, x: Tensor) -> Tensor:
        if self.batching_used == "loop":
            return self._logits_loop(x)
        if self.batching_used == "vmap":
            return self._logits_vmap(x)
        try:
            logits = self._logits_vmap(x)
        except Exception as error:  # any failure to trace: the loop is always correct
            logits = self._logits_loop(x)  # a genuine input error raises here, undecided
            logger.info("SampledEnsemble: vmap failed (%s); evaluating samples in a loop", error)
            self.batching_used = "loop"
            return logits
        self.batching_used = "vmap"
        return logits

    def sample_probs(self, x: Tensor) -> Tensor:
        """Softmax probabilities of every weight set: [n_samples, N, C, ...]."""
        return self.sample_logits(x).softmax(dim=2)

    def __call__(self, x: Tensor) -> Tensor:
        """The ensemble's predictive probabilities [N, C, ...]."""
        logits = self.sample_logits(x)
        if self.average == "logits":
            return logits.mean(0).softmax(dim=1)
        return logits.softmax(dim=2).mean(0)

    def predict(self, loader: Iterable[Any]) -> Tensor:
        """Per-sample probabilities over a whole loader: [n_samples, N, C, ...] (on the CPU)."""
        return torch.cat([self.sample_probs(_inputs(b)).cpu() for b in loader], dim=1)

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
            "sample_modules": None if self.sample_modules is None else list(self.sample_modules),
            "bn_buffers": self._stacked_buffers,
        }

    @classmethod
    def from_state_dict(
        cls, model: nn.Module, state: dict[str, Any], **options: Any
    ) -> SampledEnsemble:
        """The ensemble `state_dict` saved, on a network of the same architecture as `model`.

        `model`'s weights are replaced by the saved ones (on a copy); it draws the same weight
        sets and predicts the same probabilities as the saved ensemble. ``options`` are the
        evaluation settings (``batching``, ``chunk_size``, ``cache``).
        """
        model = copy.deepcopy(model)
        model.load_state_dict(state["model"])
        ensemble = cls(
            model,
            load_posterior(state["posterior"]),
            state["n_samples"],
            average=state["average"],
            seed=state["seed"],
            sample_modules=state["sample_modules"],
            **options,
        )
        buffers = state["bn_buffers"]
        if buffers is not None:
            ensemble._set_buffers({n: t.to(ensemble.device) for n, t in buffers.items()})
        return ensemble


def _stack(weight_sets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {n: torch.stack([w[n] for w in weight_sets]) for n in weight_sets[0]}


def _unstack(stacked: dict[str, Tensor], n: int) -> list[dict[str, Tensor]]:
    return [{name: t[index] for name, t in stacked.items()} for index in range(n)]
