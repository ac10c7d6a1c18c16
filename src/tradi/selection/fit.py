"""The one-call API: a trained model and its posterior in, the ensemble at a chosen scale out.

In the spirit of Laplace's ``optimize_prior_precision``: after training with a `WeightTracker`
(or any posterior family indexed by a scale), one call chooses the noise scale on the user's
validation loader (`tradi.selection`) and returns the `SampledEnsemble` built at that scale,
ready to predict and to ship. The sampling methods (TRADI, SWAG, Gaussian perturbation) build
and choose their ensembles through this same function.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch
from torch import nn

from tradi.inference.batchnorm import DEFAULT_BN_BATCHES
from tradi.inference.ensemble import SampledEnsemble
from tradi.inference.linearized import CLOSED_FORM_LINKS, LinearizedEnsemble
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO
from tradi.plumbing.loaders import loader_generators
from tradi.plumbing.structure import named_parameters_with_owner
from tradi.posterior import WeightPosterior
from tradi.selection.rules import ScaleSearch, ScaleSelection
from tradi.selection.search import search_scale
from tradi.tracking import WeightTracker
from tradi.tracking.start import scale_chosen_on_validation

#: The default search range of a scale: from a hundredth to a thousand times the posterior's
#: own deviation (TRADI's tracked deviations can be ~1e-3 of the weights, TRADI.md 4c).
SCALE_RANGE: tuple[float, float] = (0.01, 1000.0)

PosteriorFamily = Callable[[float], WeightPosterior]

Predictive = Literal["sampled", "linearized", "probit", "probit_shared"]
PREDICTIVES: tuple[str, ...] = ("sampled", "linearized", "probit", "probit_shared")


@contextmanager
def seeded_randomness(
    seed: int, device: torch.device, loaders: Sequence[Any] = ()
) -> Iterator[None]:
    """Run a block from torch seed ``seed`` and leave every random state as it was.

    The global torch state (CPU, and ``device`` when it is a GPU) is forked and the shuffling
    generators of ``loaders`` are rewound on exit, so a block that draws dropout masks or
    iterates a shuffling loader gives the same result each time and disturbs nothing else.
    """
    generators = [g for loader in loaders for g in loader_generators(loader)]
    states = [g.get_state() for g in generators]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            for generator, state in zip(generators, states, strict=True):
                generator.set_state(state)


def _family(
    posterior: WeightTracker | PosteriorFamily, searched: bool, predictive: str = "sampled"
) -> PosteriorFamily:
    """A function scale -> posterior; a tracker gives the paper's kernel covariance, rank 10
    (the diagonal one for the ``"probit"`` and ``"probit_shared"`` predictives, whose closed
    forms need it).
    When the scale is ``searched`` on validation data, the tracker's warning that its memory has
    not filled yet is moot (`scale_chosen_on_validation`)."""
    if isinstance(posterior, WeightTracker):
        tracker = posterior

        def kernel(scale: float) -> WeightPosterior:
            with scale_chosen_on_validation() if searched else nullcontext():
                if predictive in CLOSED_FORM_LINKS:
                    return tracker.posterior("diag", scale=scale)
                return tracker.posterior("kernel", rank=10, scale=scale)

        return kernel
    if not callable(posterior):
        raise TypeError(
            "posterior must be a WeightTracker or a function scale -> posterior, e.g. "
            f"lambda s: tracker.posterior('diag', scale=s); got {type(posterior).__name__}"
        )
    return posterior


def fit_ensemble(
    model: nn.Module,
    posterior: WeightTracker | PosteriorFamily,
    val_loader: Iterable[Any] | None = None,
    *,
    scale: float | Literal["auto"] = "auto",
    selection: ScaleSelection | None = None,
    scale_range: tuple[float, float] = SCALE_RANGE,
    start: float = 1.0,
    n_samples: int = 20,
    bn_loader: Iterable[Any] | None = None,
    seed: int = 0,
    ood_val_loader: Iterable[Any] | None = None,
    ignore_index: int | None = None,
    io: ModelIO = DEFAULT_IO,
    sample_modules: Sequence[str] | None = None,
    bn_batches: int | None = DEFAULT_BN_BATCHES,
    predictive: Predictive = "sampled",
) -> tuple[SampledEnsemble | LinearizedEnsemble, ScaleSearch | None]:
    """The ensemble at a scale chosen on validation data (or fixed), and the search.

    Args:
        model: the trained network, never modified: the ensemble evaluates its own copy and
            the search's reference pass restores every submodule's mode (parameters, buffers
            and ``training`` flags come out as they went in).
        posterior: a `WeightTracker` (sampled with the paper's kernel covariance, rank 10), or a
            function scale -> posterior, e.g. ``lambda s: tracker.posterior("diag", scale=s)``.
            ``scale`` multiplies the posterior's standard deviation (`tradi.selection`).
        val_loader: ``(inputs, targets)`` batches of held-out in-distribution data; needed for
            ``scale="auto"``.
        scale: a fixed factor (>= 0, no search), or "auto": chosen by ``selection``.
        selection: the rule (default `ScaleSelection()`: the largest scale whose validation NLL
            is within 10% of the trained network's; needs no OOD data).
        scale_range: the (low, high) searched unless ``selection`` sets its own.
        start: where the default rule's search starts (1: the posterior as it is).
        n_samples: weight sets in the ensemble (20, the paper's code).
        bn_loader: training batches to re-estimate BatchNorm statistics per sample (as the paper
            and SWAG do); None keeps the model's statistics.
        seed: the weight sets, and dropout during the BatchNorm pass, depend on it alone; every
            scale draws from the same seed.
        ood_val_loader: a declared OOD validation set, read only by rule "ood_auroc".
        ignore_index: a label that counts nowhere (segmentation).
        io: how batches become model inputs and targets (`tradi.ModelIO`; default: tuples).
        sample_modules: sample only these modules' parameters, the trunk before them evaluated
            once per input (`tradi.inference.trunk`; None: every tracked parameter).
        bn_batches: re-estimate BatchNorm on the first ``bn_batches`` batches only (default 30,
            `tradi.inference.batchnorm.DEFAULT_BN_BATCHES`; None: the whole loader).
        predictive: ``"sampled"`` (the paper: weight sets drawn and averaged, a
            `SampledEnsemble`); ``"linearized"``: the linearized (GLM) predictive, logit draws
            around the trained network's own logits (`tradi.LinearizedEnsemble`, ``link="mc"``;
            the last layer alone when ``sample_modules`` names it); ``"probit"``: its closed
            form for the one layer ``sample_modules`` names, with a tracker's diagonal
            posterior (one extra call of that layer, no sampling); ``"probit_shared"``: the
            same with one variance per input, the classes' mean, so the arg-max is the
            network's exactly at any scale (`probit_softmax`). The linearized predictives
            need no BatchNorm re-estimation (``bn_loader`` is not read). docs/one-run.md.

    Returns:
        (ensemble, search): the `SampledEnsemble` or `LinearizedEnsemble` ([N, C] probabilities
        when called) at the chosen scale, and the `ScaleSearch` record (None for a fixed
        ``scale``).

    Raises:
        ValueError: "auto" without ``val_loader``, a negative scale, a bad selection/range, a
            model whose parameters' shapes are not the tracker's, an unknown ``predictive``, or
            ``"probit"`` / ``"probit_shared"`` without exactly one module in
            ``sample_modules``.
        TypeError: ``posterior`` is neither a tracker nor callable.
    """
    family = _family(posterior, searched=scale == "auto", predictive=predictive)
    if isinstance(posterior, WeightTracker):
        check_centre(model, posterior, sampled=predictive == "sampled")
    settings = {"n_samples": n_samples, "seed": seed, "io": io}
    if predictive == "sampled":
        ensemble_settings = {"bn_loader": bn_loader, "bn_batches": bn_batches}
        build = _builder(
            model, family, **settings, **ensemble_settings, sample_modules=sample_modules
        )
    else:
        build = _linearized_builder(model, family, predictive, sample_modules, **settings)
    if scale != "auto":
        if isinstance(scale, str) or scale < 0:
            raise ValueError(f"scale must be a number >= 0 or 'auto', got {scale!r}")
        return build(float(scale)), None
    if val_loader is None:
        raise ValueError("scale='auto' is chosen on validation data: pass val_loader")
    search, ensemble = search_scale(
        build,
        model,
        val_loader,
        selection or ScaleSelection(),
        scale_range,
        start=start,
        ood_val_loader=ood_val_loader,
        ignore_index=ignore_index,
        io=io,
    )
    if search.note:  # an end of the range decided: the bound says little about this posterior
        _warn_range_end(search)
    return ensemble, search


def _builder(
    model: nn.Module, family: PosteriorFamily, **settings: Any
) -> Callable[[float], SampledEnsemble]:
    """scale -> the `SampledEnsemble` of ``family(scale)`` with ``settings`` (`fit_ensemble`'s
    ensemble keywords), built from the seed with every random state left as it was
    (`seeded_randomness`): a deterministic function of the scale."""
    device = next(model.parameters()).device
    bn_loader = settings["bn_loader"]

    def build(value: float) -> SampledEnsemble:
        with seeded_randomness(
            settings["seed"], device, [bn_loader] if bn_loader is not None else []
        ):
            return SampledEnsemble(model, family(value), **settings)

    return build


def _linearized_builder(
    model: nn.Module,
    family: PosteriorFamily,
    predictive: str,
    sample_modules: Sequence[str] | None,
    **settings: Any,
) -> Callable[[float], LinearizedEnsemble]:
    """scale -> the `LinearizedEnsemble` of ``family(scale)``: ``"linearized"`` (logit draws)
    or ``"probit"`` / ``"probit_shared"`` (closed form on the one layer ``sample_modules``
    names)."""
    if predictive not in PREDICTIVES:
        raise ValueError(f"predictive must be one of {PREDICTIVES}, got {predictive!r}")
    layers = list(sample_modules or [])
    if len(layers) > 1 or (predictive in CLOSED_FORM_LINKS and len(layers) != 1):
        raise ValueError(
            f"predictive={predictive!r} linearizes one last layer: name it alone in "
            f"sample_modules (e.g. ['fc']), got {sample_modules!r}"
        )
    link = predictive if predictive in CLOSED_FORM_LINKS else "mc"
    layer = layers[0] if layers else None

    def build(value: float) -> LinearizedEnsemble:
        return LinearizedEnsemble(model, family(value), link=link, last_layer=layer, **settings)

    return build


def _warn_range_end(search: ScaleSearch) -> None:
    """The RuntimeWarning, at `fit_ensemble`'s caller, that an end of the range decided."""
    warnings.warn(
        f"fit_ensemble: {search.note}. The chosen scale {search.scale:g} sits at the end of "
        "the search range: the tracked deviations are ~0 (a learning rate decayed to 0, a "
        "short memory) or the ensemble is hurt even at the smallest scale (e.g. BatchNorm "
        "re-estimated on too few batches); inspect search.points, or fix the scale",
        RuntimeWarning,
        stacklevel=3,
    )


def check_centre(model: nn.Module, tracker: WeightTracker, *, sampled: bool = True) -> None:
    """Warn when ``model``'s weights are not those of the tracker's last update: the samples are
    centred on the tracked mean, so another model (a restored checkpoint, a fresh network)
    would be scored against a posterior of different weights."""
    tracker.check_model(model)  # parameters replaced, removed or reshaped: a ValueError
    params = {name: param for name, _, param in named_parameters_with_owner(model)}
    for name, mean in tracker.mean().items():
        weight = params.get(name)
        if weight is not None and weight.shape != mean.shape:
            raise ValueError(
                f"fit_ensemble: the model's {name!r} has shape {tuple(weight.shape)}, the "
                f"tracker's {tuple(mean.shape)}: pass the model the tracker followed (the "
                "same architecture)"
            )
        if weight is None or not torch.allclose(
            weight.detach().to(mean.dtype).cpu(), mean.cpu(), rtol=1e-4, atol=1e-6
        ):
            warnings.warn(
                f"the model's {name!r} differs from the tracker's mean (its weights at the last "
                "tracker.update(); same name and shape): it was trained after that update, or it "
                "is another network (e.g. a restored checkpoint). "
                + (
                    "The ensemble is centred on the tracked weights"
                    if sampled
                    else "The predictive is centred on this model, with the spread tracked for "
                    "the other weights"
                )
                + "; call tracker.update() after every optimizer.step(), or pass the network "
                "the tracker followed",
                RuntimeWarning,
                stacklevel=3,
            )
            return
