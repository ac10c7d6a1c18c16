"""TRADI from a trained network: short tracked cycles from its weights, one Gaussian per mode,
and the mixture of their linearized predictives at ONE scale chosen on validation data.

After a network is trained (by the user, or with a tracker), `explore` runs ``cycles`` short
cycles of ``epochs_per_cycle`` epochs from its weights, each with the learning rate annealed from
the optimizer's to 0 by a cosine (snapshot ensembles, Huang et al. 2017; FGE, Garipov et al.
2018), each tracked by its own `WeightTracker`. Every cycle's end is a mode; the trained network
is one more. Each mode predicts with the linearized predictive of its tracked Gaussian
(`tradi.inference.linearized`: by default the last layer, probit link, so each mode keeps its
network's logits as the mean), and the modes are averaged (`MixturePredictive`). The scale is
chosen once for the pooled mixture by the library's search (`tradi.selection`), never per mode.

The cost, beyond the original training, is ``cycles * epochs_per_cycle`` epochs plus the search
(one pass of the validation data per scale tried: the probit needs no sampling and no BatchNorm
re-estimation). docs/selection.md holds the study behind the defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

import tradi.training.exploration_state as saved_form
from tradi.inference.last_layer import check_last_layer, find_last_layer
from tradi.inference.linearized import LinearizedEnsemble, Link
from tradi.inference.mixture import MixturePredictive
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO
from tradi.plumbing.structure import unwrap
from tradi.selection.fit import SCALE_RANGE, check_centre, seeded_randomness
from tradi.selection.rules import ScaleSearch, ScaleSelection, scale_search_from_dict
from tradi.selection.search import search_scale
from tradi.tracking import WeightTracker
from tradi.tracking.start import scale_chosen_on_validation
from tradi.training.callbacks import TrackingCallback
from tradi.training.hooks import FitResult
from tradi.training.loop import fit

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

#: The study's winner on validation data (docs/one-run.md): the lowest validation NLL.
DEFAULT_SELECTION = ScaleSelection(rule="min_nll")


@dataclass(frozen=True)
class Exploration:
    """What `explore` built.

    ``predictive``: the mixture (inputs -> probabilities [N, C, ...]). ``search``: the scale
    search (None for a fixed scale). ``modes``: the networks of the modes (eval-mode copies; the
    trained network first when included). ``trackers``: each mode's tracker. ``cost_epochs``:
    the epochs of training added (``cycles * epochs_per_cycle``). ``seconds``: wall time of the
    cycles and the search. ``scale``: the scale the predictive uses. ``runs``: each cycle's
    `FitResult` (its epochs and training time). ``last_layer``: the layer sampled (None: the
    whole network). ``link``, ``n_samples``, ``seed``: the predictive's, as given to `explore`.
    Its repr shows only the cost, time, scale and layer. `state_dict` saves it and
    `from_state_dict` rebuilds it without training or searching.
    """

    predictive: MixturePredictive = field(repr=False)
    search: ScaleSearch | None = field(repr=False)
    modes: list[nn.Module] = field(repr=False)
    trackers: list[WeightTracker] = field(repr=False)
    cost_epochs: int
    seconds: float
    scale: float | None = None
    runs: tuple[FitResult, ...] = field(default=(), repr=False)
    last_layer: str | None = None
    link: Link = field(default="probit", repr=False)
    n_samples: int = field(default=20, repr=False)
    seed: int = field(default=0, repr=False)

    def state_dict(self) -> dict[str, Any]:
        """Everything `from_state_dict` needs to rebuild the same predictive: every mode's
        network weights (its own parameter names; tensors shared with the modes, as
        ``nn.Module.state_dict``), every tracker's ``WeightTracker.state_dict()`` and Kalman
        constants (a tracker shared by modes once), the scale, the search record
        (``dataclasses.asdict``), the runs (`FitResult`s as dicts), ``last_layer``, ``link``,
        ``n_samples``, ``seed``, ``cost_epochs``, ``seconds`` and a format version. Only plain
        types and tensors: ``torch.save(state, f)`` then ``torch.load(f, weights_only=True)``.

        Raises:
            ValueError: an `Exploration` without a scale (built by hand with ``scale=None``).
        """
        if self.scale is None:
            raise ValueError("this Exploration has no scale: a saved predictive needs one")
        return {
            "format": saved_form.FORMAT,
            "version": saved_form.VERSION,
            "modes": [unwrap(mode).state_dict() for mode in self.modes],
            **saved_form.trackers_state(self.modes, self.trackers),
            "scale": float(self.scale),
            "search": None if self.search is None else dataclasses.asdict(self.search),
            "runs": [dataclasses.asdict(run) for run in self.runs],
            "last_layer": self.last_layer,
            "link": self.link,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "cost_epochs": self.cost_epochs,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state_dict(
        cls, saved: dict[str, Any], model: nn.Module, *, io: ModelIO = DEFAULT_IO
    ) -> Exploration:
        """The `Exploration` that `state_dict` saved, its predictive rebuilt by `mode_mixture`
        (the same probabilities, bit for bit, on the same device and ``io``).

        ``model``: a network of the architecture `explore` ran on, the template of every mode
        (each mode is a deep copy holding its saved weights, on the template's device; the
        template is not modified). ``io``: how batches become inputs (not saved: a function).

        Raises:
            ValueError: not a saved `Exploration`, another format version, missing keys,
                counts of modes and trackers that disagree, a tracker state of another network.
            RuntimeError: saved weights that do not fit the template (load_state_dict's error,
                naming the mode).
        """
        saved_form.check_saved(saved)
        modes = saved_form.loaded_modes(saved["modes"], model)
        trackers = saved_form.rebuilt_trackers(saved, modes)
        settings = {key: saved[key] for key in ("link", "last_layer", "n_samples", "seed")}
        predictive = mode_mixture(modes, trackers, float(saved["scale"]), io=io, **settings)
        search = saved["search"]
        return cls(
            predictive=predictive,
            search=None if search is None else scale_search_from_dict(search),
            modes=modes,
            trackers=trackers,
            cost_epochs=int(saved["cost_epochs"]),
            seconds=float(saved["seconds"]),
            scale=float(saved["scale"]),
            runs=tuple(FitResult(**run) for run in saved["runs"]),
            **settings,
        )


def explore(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    optimizer: OptimizerFactory,
    cycles: int = 2,
    epochs_per_cycle: int = 3,
    tracker: WeightTracker | None = None,
    include_trained: bool = True,
    last_layer: str | Literal["auto"] | None = "auto",
    link: Link = "probit",
    n_samples: int = 20,
    scale: float | Literal["auto"] = "auto",
    selection: ScaleSelection | None = None,
    loss_fn: Callable[..., torch.Tensor] = F.cross_entropy,
    seed: int = 0,
    io: ModelIO = DEFAULT_IO,
    ignore_index: int | None = None,
) -> Exploration:
    """Modes from short tracked cycles after training, and their mixture predictive.

    Args:
        model: the trained network (never modified: the cycles train copies).
        train_loader: the training batches the cycles run on.
        val_loader: held-out in-distribution batches; needed for ``scale="auto"``.
        optimizer: parameters -> optimizer, e.g. ``lambda p: torch.optim.SGD(p, lr=0.05,
            momentum=0.9)``; its learning rate is each cycle's peak.
        cycles: the number of cycles (modes added), >= 1.
        epochs_per_cycle: epochs per cycle, >= 1; the tracker's memory is one epoch.
        tracker: the tracker of the original training, for the trained network's mode; None:
            that mode takes the first cycle's tracked variances (the cycle starts from it).
        include_trained: the trained network is a mode too.
        last_layer: the module sampled alone (its output must be the logits, or give them by a
            resize: a segmentation network's upsampling, `tradi.inference.last_layer`);
            ``"auto"``: the Linear/Conv/ConvTranspose module whose output is the logits, else
            the one whose output resized is (`find_last_layer`); None: every tracked parameter
            (``link="mc"``).
        link: ``"probit"`` (closed form, last layer), ``"probit_shared"`` (the same with one
            variance per input: each mode keeps its arg-max exactly) or ``"mc"``
            (`LinearizedEnsemble`).
        n_samples: logit draws per mode for ``link="mc"``.
        scale: a fixed factor of the tracked deviations, or ``"auto"``: chosen by ``selection``
            over the pooled mixture, once.
        selection: the search's rule; default ``ScaleSelection("min_nll")``, the lowest
            validation NLL (the rule declared before the study in docs/one-run.md). With
            ``"nll_tolerance"`` the bound is relative to the modes' mixture without spread
            (scale 0), not to the trained network: the spread may cost ``tolerance`` of the
            modes' NLL, never their whole gain.
        loss_fn: the training loss of the cycles.
        seed: the cycles' randomness (shuffling, dropout) and the draws depend on it alone.
        io: how batches become inputs and targets (`tradi.ModelIO`).
        ignore_index: a label the scale search counts nowhere (segmentation's unlabelled
            pixels).

    Returns:
        An `Exploration`.

    Raises:
        ValueError: cycles or epochs_per_cycle < 1, ``scale="auto"`` without ``val_loader``, a
            negative scale, or no Linear/Conv layer giving the logits (or them resized) for
            ``last_layer="auto"``.

    Source: snapshot ensembles (Huang et al. 2017), FGE (Garipov et al. 2018), MultiSWAG
    (Wilson & Izmailov 2020), the linearized predictive (Immer et al. 2021).
    """
    _check(cycles, epochs_per_cycle, scale, val_loader, optimizer)
    if tracker is not None:
        check_centre(model, tracker, sampled=False)  # the trained mode's spread is this tracker's
    started = time.perf_counter()
    layer = _last_layer(model, train_loader, last_layer, seed, io)
    modes, trackers, runs = _run_cycles(
        model, train_loader, optimizer, cycles, epochs_per_cycle, loss_fn, seed, io
    )
    if include_trained:
        trained = copy.deepcopy(model).eval()
        modes, trackers = [trained, *modes], [tracker or trackers[0], *trackers]

    make = _mixture_builder(modes, trackers, link, layer, n_samples, seed, io)
    search = None
    if scale == "auto":
        assert val_loader is not None
        rule = selection or DEFAULT_SELECTION
        modes_alone = make(0.0)  # the bound of an NLL rule prices the spread, not the modes
        search, predictive = search_scale(
            make, model, val_loader, rule, SCALE_RANGE, io=io, reference=modes_alone,
            ignore_index=ignore_index,
        )  # fmt: skip  # type: ignore[arg-type]
    else:
        predictive = make(scale)
    return Exploration(
        predictive=predictive,  # type: ignore[arg-type]
        search=search,
        modes=modes,
        trackers=trackers,
        cost_epochs=cycles * epochs_per_cycle,
        seconds=time.perf_counter() - started,
        scale=search.scale if search is not None else float(scale),
        runs=tuple(runs),
        last_layer=layer,
        link=link,
        n_samples=n_samples,
        seed=seed,
    )


def mode_mixture(
    modes: list[nn.Module],
    trackers: list[WeightTracker],
    scale: float,
    *,
    link: Link = "probit",
    last_layer: str | None,
    n_samples: int = 20,
    seed: int = 0,
    io: ModelIO = DEFAULT_IO,
) -> MixturePredictive:
    """The mixture `explore` builds, from modes and trackers already at hand (a saved
    `Exploration`'s networks and tracker states) at a known ``scale``: the same predictive,
    with nothing trained or searched. Arguments as `explore`'s; one tracker per mode;
    ``last_layer`` as the `Exploration` records it.

    Raises:
        ValueError: as `explore` and `LinearizedEnsemble` do (no Linear/Conv layer, a negative
            scale, modes and trackers of different counts).
    """
    if len(modes) != len(trackers):
        raise ValueError(f"{len(modes)} modes but {len(trackers)} trackers: give one per mode")
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale!r}")
    return _mixture_builder(modes, trackers, link, last_layer, n_samples, seed, io)(scale)


def _mixture_builder(
    modes: list[nn.Module],
    trackers: list[WeightTracker],
    link: Link,
    layer: str | None,
    n_samples: int,
    seed: int,
    io: ModelIO,
) -> Callable[[float], MixturePredictive]:
    """scale -> the mixture of every mode's linearized predictive at that scale."""
    covariance = "kernel" if link == "mc" else "diag"  # the closed forms need the diagonal

    def make(value: float) -> MixturePredictive:
        with scale_chosen_on_validation():  # the scale is searched (or fixed by the caller)
            members = [
                LinearizedEnsemble(
                    mode,
                    t.posterior(covariance, scale=value),
                    n_samples,
                    link=link,
                    last_layer=layer,
                    seed=seed,
                    io=io,
                )
                for mode, t in zip(modes, trackers, strict=True)
            ]
        return MixturePredictive(members, io)

    return make


def _last_layer(
    model: nn.Module,
    train_loader: Iterable[Any],
    last_layer: str | None,
    seed: int,
    io: ModelIO,
) -> str | None:
    """The layer sampled alone: ``last_layer`` checked before any training, or for ``"auto"``
    found by one forward pass of the first training batch, drawn with the loader's randomness
    rewound (the cycles then see the shuffles they would see with the layer named)."""
    if last_layer == "auto":
        device = next(model.parameters(), torch.empty(0)).device
        with seeded_randomness(seed, device, [train_loader]):
            return find_last_layer(model, next(iter(train_loader)), io)
    if last_layer is not None:
        check_last_layer(model, last_layer)
    return last_layer


def _run_cycles(
    model: nn.Module,
    train_loader: Iterable[Any],
    optimizer: OptimizerFactory,
    cycles: int,
    epochs: int,
    loss_fn: Callable[..., torch.Tensor],
    seed: int,
    io: ModelIO,
) -> tuple[list[nn.Module], list[WeightTracker], list[FitResult]]:
    """``cycles`` cosine cycles, each from the previous one's end, each tracked anew; the
    modes, their trackers and the cycles' `FitResult`s."""
    memory = len(train_loader) if isinstance(train_loader, Sized) else None
    device = next(model.parameters()).device
    modes: list[nn.Module] = []
    trackers: list[WeightTracker] = []
    runs: list[FitResult] = []
    current = model
    with seeded_randomness(seed, device, [train_loader]):
        for _ in range(cycles):
            current = copy.deepcopy(current).train()
            opt = optimizer([p for p in current.parameters() if p.requires_grad])
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            callback = TrackingCallback(
                lambda m, o: WeightTracker(m, memory=memory if memory and memory > 1 else None)
            )
            runs.append(fit(current, train_loader, optimizer=opt, epochs=epochs, loss_fn=loss_fn,
                scheduler=schedule, callbacks=[callback], progress=False, io=io))  # fmt: skip
            assert callback.tracker is not None
            modes.append(current.eval())
            trackers.append(callback.tracker)
    return modes, trackers, runs


def _check(
    cycles: int,
    epochs: int,
    scale: float | str,
    val_loader: Iterable[Any] | None,
    optimizer: Any,
) -> None:
    if isinstance(optimizer, torch.optim.Optimizer) or not callable(optimizer):
        raise TypeError(
            "optimizer must be a function parameters -> optimizer (each cycle trains its own "
            "copy of the network), e.g. lambda params: torch.optim.SGD(params, lr=0.05, "
            f"momentum=0.9); got {type(optimizer).__name__}"
        )
    if cycles < 1 or epochs < 1:
        raise ValueError(f"cycles and epochs_per_cycle must be >= 1, got {cycles}, {epochs}")
    if scale == "auto" and val_loader is None:
        raise ValueError("scale='auto' chooses the scale on validation data: pass val_loader")
    if scale != "auto" and (not isinstance(scale, (int, float)) or scale < 0):
        raise ValueError(f"scale must be 'auto' or a number >= 0, got {scale!r}")
