"""`WeightTracker`: TRADI's Kalman tracking of each weight's mean and variance during training.

Call `tracker.update()` right after every `optimizer.step()`. Per step and per weight:

    d      = w(t) - w(t-1)               (step="delta", default: the step the optimizer took)
           = -lr * grad                  (step="gradient": the paper's and public code's form)
    mu     = (1 - K_mu) (mu + d)     + K_mu w(t)
    sigma2 = (1 - K_s2) (sigma2 + d^2) + K_s2 (w(t) - mu)^2      (mu: the value just updated)

with scalar gains K from `tradi.tracking.kalman` and the per-weight work in
`tradi.tracking.updates`. The variance measurement is the public code's (w - mu)^2, not the
slides' w^2 - mu^2 form (see TRADI.md section 2 and docs/tracker.md).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

import tradi.tracking.layout as layout
from tradi.distributed.sharded import gather_like, is_sharded, local_shard
from tradi.plumbing.structure import unwrap
from tradi.posterior import DiagonalGaussian, KernelGaussian, WeightPosterior
from tradi.tracking.kalman import KalmanConfig, gain_step
from tradi.tracking.layout import Plan
from tradi.tracking.start import (
    InitMean,
    InitVariance,
    ParamFilter,
    StepForm,
    check_options,
    check_state,
    default_param_filter,
    early_posterior_message,
)
from tradi.tracking.updates import (
    Outcome,
    gradient_steps,
    next_scale,
    update_delta,
    update_floor,
    update_gradient,
)


class WeightTracker:
    """Tracks mean and variance of every selected weight of `model` with TRADI's Kalman filters.

    Args:
        model: the network being trained (never modified by the tracker).
        step: "delta" uses the real weight change (right for momentum, Adam, weight decay,
            clipping); "gradient" uses -lr * grad as the paper does (needs `optimizer` to read
            each parameter's current learning rate).
        optimizer: required for step="gradient".
        memory: the filters' memory in optimizer steps, e.g. the steps per epoch (or a fraction
            of the total steps): `KalmanConfig.from_memory(memory, memory)`. The variance is then
            an exponentially weighted sum of the squared steps over about the last `memory`
            steps. None: `config`, or the public code's constants (memories ~316/~448 steps).
        config: the filters' noise constants (Q, R, P(0)); not together with `memory`.
        init_mean: "weights" (default: mu(0) = w(0)) or "zero" (the public code's start).
        init_variance: sigma2(0) >= 0 (default 0), or "public_code": sqrt(2 / size(0)) per
            tensor, a standard deviation used as a variance, which takes ~5,000 steps to fade.
        param_filter: `(name, owning module, parameter) -> bool`; overrides the default that
            skips normalisation layers and frozen parameters.

    With the default start and step="delta" the mean is the weights themselves (docs/tracker.md):
    the float32 state is sigma2 and w(t-1), 8 bytes per weight (12 for another start); float64
    weights get float64 state (16 and 24 bytes), bf16 / fp16 ones float32. Parameter
    names are the model's own with every wrapper looked through (DDP, DataParallel,
    torch.compile, ...; `tradi.plumbing.structure`), and a tied tensor is tracked once, under its first
    name: state moves between a wrapped and a plain model. A lazy layer must have run one forward
    pass first (else a ValueError).

    The model may change during training (docs/tracker.md): a parameter frozen at construction
    is tracked from the first update after it becomes trainable (call `update()` right after
    unfreezing to measure its first step too); a replaced, added, removed or reshaped parameter
    is named in a RuntimeWarning at the next update, which tracks it afresh; `posterior()` and
    `check_model()` raise a ValueError for such a change made after the last update.

    Raises:
        ValueError: an unknown `step`/`init_mean`, step="gradient" without `optimizer`, a
            negative `init_variance`, `memory` <= 1 or with `config`, or no parameter selected.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        step: StepForm = "delta",
        optimizer: torch.optim.Optimizer | None = None,
        memory: float | None = None,
        config: KalmanConfig | None = None,
        init_mean: InitMean = "weights",
        init_variance: InitVariance = 0.0,
        param_filter: ParamFilter | None = None,
    ) -> None:
        check_options(step, optimizer, memory, config, init_mean, init_variance)
        self._model = model
        self._keep = param_filter or default_param_filter
        self._start: tuple[InitMean, InitVariance] = (init_mean, init_variance)
        self._generation = layout.generation()  # before the walk: a change during it is seen
        plan = layout.select(model, self._keep, {}, {})
        if not plan.named:
            raise ValueError("no parameter of the model is selected for tracking")
        self.step_form: StepForm = step
        self.optimizer = optimizer
        self.config = KalmanConfig.from_memory(memory, memory) if memory is not None else config
        self.config = self.config or KalmanConfig()
        self._p_mean = self._p_var = self.config.p0
        self.num_updates = 0
        self.num_skipped = 0
        self._warned: set[str] = set()
        self._stale = False  # True: walk the model at the next update
        self.names: list[str] = []
        self._params: list[nn.Parameter] = []
        self._sizes: list[int] = []
        self._var_scale = 1.0  # sigma2 = _var_scale * _var (!= 1 only at the floor)
        # the floor: with mu(0) = w(0) and the real step, mu(t) = w(t) is not stored
        self._stores_mean = step == "gradient" or init_mean == "zero"
        self._delta = step == "delta"
        self._var = torch.empty(0)
        self._mean: Tensor | None = None
        self._previous: Tensor | None = None  # w(t-1), only needed for the real step
        self._lay_out(plan)

    def _lay_out(self, plan: Plan) -> None:
        """(Re)build the flat state for `plan`: the carried parameters keep theirs, the others
        start as at construction (mu = w(t) or 0, sigma2(0)), with the filters' current gains."""
        if self._var_scale != 1.0:  # fold the floor's scale in: fresh chunks need no scaling
            self._var.mul_(self._var_scale)
            self._var_scale = 1.0
        keys = ["variance"] + ["mean"] * self._stores_mean + ["previous"] * (self._delta)
        old = {"variance": self._var, "mean": self._mean, "previous": self._previous}
        old = {k: v for k, v in old.items() if v is not None and v.numel()}
        state = layout.lay_out(keys, old, self.names, self._sizes, plan, self._start)
        self._var, self._mean, self._previous = (state.get(k) for k in layout.KEYS)
        params = [p for _, p in plan.named]
        self.names, self._params, self._dtype = [n for n, _ in plan.named], params, self._var.dtype
        self._sharded = is_sharded(params)  # FSDP2: the state covers this rank's shards only
        self._shapes = [local_shard(p).shape for p in params]
        self._sizes = [shape.numel() for shape in self._shapes]
        self._whole_shapes = [p.shape for p in params]
        self._whole_sizes = [p.numel() for p in params]
        self._watched = plan.watched
        # views give per-parameter access to the flat state
        self._mean_views = [] if self._mean is None else self._views(self._mean)
        self._previous_views = [] if self._previous is None else self._views(self._previous)

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [c.view(s) for c, s in zip(flat.split(self._sizes), self._shapes, strict=True)]

    def _gather_weights(self) -> Tensor:
        """All tracked weights as one flat vector in the state's dtype."""
        flat = torch.cat([local_shard(p.detach()).reshape(-1) for p in self._params])
        return flat.to(self._dtype)

    # ------------------------------------------------------------------ a model that changes
    def _plan(self) -> Plan:
        """The tracked set for the model now, against the current one."""
        tracked = dict(zip(self.names, self._params, strict=True))
        shapes = dict(zip(self.names, self._whole_shapes, strict=True))
        watched = {id(p) for p in self._watched}
        # tensor identity tells a replaced layer; not under FSDP2, which registers other tensor
        # objects (unsharded ones) around forward passes: there by name and shape only
        return layout.select(self._model, self._keep, tracked, shapes, not self._sharded, watched)

    def _may_have_changed(self) -> bool:
        """Cheap per step: a module or parameter assigned anywhere, a watched frozen parameter
        made trainable, or a tracked tensor resized in place (`layout`'s docstring)."""
        return (
            self._stale
            or self._generation != layout.generation()
            or any(p.requires_grad for p in self._watched)
            # sizes, not shapes: Parameter.shape costs ~0.3 µs, numel() ~0.08 (21 tensors of
            # ResNet-20: 1.6 µs). A reshape to the same size is seen by the posterior's walk
            or [p.numel() for p in self._params] != self._whole_sizes
        )

    def _follow_model(self) -> None:
        """Lay the state out again if the model's parameters changed, warning (once per change)
        unless the only change is parameters frozen before and trainable now (docs/tracker.md:
        the fine-tuning recipe)."""
        self._generation, self._stale = layout.generation(), False
        plan = self._plan()
        self._watched = plan.watched
        changes = plan.changes
        if not (changes.breaking or changes.new or changes.unfrozen):
            return
        self._lay_out(plan)
        if changes.breaking or changes.new:
            warnings.warn(
                layout.update_warning(changes),
                RuntimeWarning,
                stacklevel=4,  # _follow_model < update < torch.no_grad's wrapper < the caller
            )

    def check_model(self, model: nn.Module | None = None) -> None:
        """Check that the tracked state still describes the parameters of the model the tracker
        follows; `posterior()` and `fit_ensemble` call it. Another `model` (not the tracker's,
        wrappers looked through) is not checked here: fit_ensemble compares it by name, shape
        and value.

        Raises:
            ValueError: naming the parameters replaced (other tensor objects), reshaped or
                removed since the last `update()`: sampling would put the old tensors' tracked
                values into the new ones. Call `tracker.update()` once after changing the
                model; it tracks them afresh.

        Warns (RuntimeWarning, once) for trainable parameters that are not tracked yet (added or
        unfrozen after the last update): every sampled network keeps their current weights.
        """
        if model is not None and unwrap(model, names_only=True) is not unwrap(
            self._model, names_only=True
        ):
            return
        changes = self._plan().changes
        if changes.breaking:
            self._stale = True
            raise ValueError(layout.sampling_error(changes))
        if changes.new or changes.unfrozen:
            self._warn_once("untracked", layout.untracked_warning(changes.new + changes.unfrozen))

    # ------------------------------------------------------------------ the Kalman step
    @torch.no_grad()
    def update(self) -> bool:
        """One Kalman step after `optimizer.step()`. Returns False if the step was skipped.

        Skipped, for the whole model and in both step forms, leaving the state exactly as it
        was and counted in `num_skipped`: a step the optimizer did not take (no tracked weight
        moved, or a non-finite gradient that left the weights finite: `torch.amp.GradScaler`
        skipping an inf step), silently; a non-finite step (NaN/Inf weights), with one warning.
        """
        if self._may_have_changed():
            self._follow_model()
        k_mean, p_mean = gain_step(self._p_mean, self.config.q_mean, self.config.r_mean)
        k_var, p_var = gain_step(self._p_var, self.config.q_var, self.config.r_var)
        outcome = self._apply(k_mean, k_var)
        if outcome is not Outcome.DONE:
            self.num_skipped += 1
            if outcome is Outcome.NON_FINITE:
                self._warn_once(
                    "non_finite",
                    "WeightTracker: non-finite weights or step; this step is skipped and the "
                    "tracked state left unchanged (see tracker.num_skipped for the count)",
                    stacklevel=4,  # update() is wrapped by @torch.no_grad(): one frame more
                )
            return False
        self._p_mean, self._p_var = p_mean, p_var
        if self._mean is None:
            self._var_scale = next_scale(self._var, self._var_scale, k_var)
        self.num_updates += 1
        return True

    def _apply(self, k_mean: float, k_var: float) -> Outcome:
        if self.step_form == "gradient":
            assert self._mean is not None and self.optimizer is not None
            steps = gradient_steps(self._params, self._sizes, self.optimizer, self._dtype)
            weights = self._gather_weights()
            return update_gradient(self._mean, self._var, steps, weights, (k_mean, k_var))
        assert self._previous is not None
        # detached (multi-tensor ops take a slower path on tensors that require grad), any
        # dtype (the ops promote bf16 / fp16 weights to the float32 state)
        weights = [p.detach() for p in self._params]
        weights = [local_shard(w) for w in weights] if self._sharded else weights
        if self._mean is None:
            prev, views = self._previous, self._previous_views
            return update_floor(self._var, self._var_scale, prev, views, weights)
        views = (self._mean_views, self._previous_views)
        return update_delta(self._mean, self._var, self._previous, views, weights, (k_mean, k_var))

    def _warn_once(self, key: str, message: str, stacklevel: int = 3) -> None:
        """Warn once per ``key``, at the line of the user's call (``stacklevel`` frames up)."""
        if key not in self._warned:
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)
            self._warned.add(key)

    # ------------------------------------------------------------------ results
    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        chunks = flat.split(self._sizes)
        return {
            n: c.reshape(shape).clone()
            for n, c, shape in zip(self.names, chunks, self._shapes, strict=True)
        }

    def _whole(self, local: dict[str, Tensor]) -> dict[str, Tensor]:
        """Whole tensors from this rank's shards (FSDP2; collective), else `local` itself."""
        if not is_sharded(self._params):
            return local
        return gather_like(dict(zip(self.names, self._params, strict=True)), local)

    def mean(self) -> dict[str, Tensor]:
        """Tracked means {parameter name: tensor of the state's dtype} (copies; this rank's
        shards under FSDP2: `posterior()` gathers them). At the floor (step="delta", init_mean="weights")
        the mean is w(t-1) after the last update: the weights of the last tracked step."""
        return self._unflatten(self._previous if self._mean is None else self._mean)

    def variance(self) -> dict[str, Tensor]:
        """Tracked variances {parameter name: tensor of the state's dtype} (copies)."""
        return self._unflatten(self._var * self._var_scale)

    def weights(self) -> dict[str, Tensor]:
        """Current weights of the tracked parameters (copies in the state's dtype): w* for the
        kernel."""
        return self._unflatten(self._gather_weights())

    def posterior(
        self,
        covariance: Literal["diag", "kernel"] = "diag",
        *,
        rank: int = 10,
        scale: float = 1.0,
        phase: Literal["feature", "weight"] = "feature",
    ) -> WeightPosterior:
        """The Gaussian to sample weight sets from (TRADI.md section 3).

        "kernel" is the low-rank random-Fourier-feature covariance anchored at the current
        weights w*, with one phase per feature; phase="weight" is the public code's variant,
        whose samples are diagonal in effect (only for comparison).
        Under FSDP2 the shards are gathered into whole tensors: every rank must call this.
        Warns once (RuntimeWarning) if drawn before any update or before the variance filter's
        memory has filled, saying what to do.
        """
        self.check_model()
        message = early_posterior_message(self.num_updates, self.config)
        if message:
            self._warn_once("early", message)
        mean, variance = self._whole(self.mean()), self._whole(self.variance())
        if covariance == "diag":
            return DiagonalGaussian(mean, variance, scale=scale)
        if covariance == "kernel":
            weights = self._whole(self.weights())
            return KernelGaussian(mean, variance, weights, rank=rank, scale=scale, phase=phase)
        raise ValueError(f"covariance must be 'diag' or 'kernel', got {covariance!r}")

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "step_form": self.step_form,
            "p_mean": self._p_mean,
            "p_var": self._p_var,
            "num_updates": self.num_updates,
            "num_skipped": self.num_skipped,
            "mean": None if self._mean is None else self._mean.clone(),  # None: mean = previous
            "variance": self._var.clone(),  # sigma2 / variance_scale
            "variance_scale": self._var_scale,
            "previous": None if self._previous is None else self._previous.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output (also of other starts: see docs/tracker.md).

        Raises:
            ValueError: another model, step form or size, or a checkpoint whose mean differs
                from w(t-1) loaded into a tracker at the floor (build it with the start the
                checkpoint was made with, e.g. init_mean="zero").
        """
        if state["names"] != self.names and state["step_form"] == self.step_form:
            # a checkpoint of other parameters (made after unfreezing, say): its layout, if the
            # model has them all with its size; else check_state says what differs
            tracked = dict(zip(self.names, self._params, strict=True))
            size = state["variance"].numel()
            plan = layout.plan_names(self._model, list(state["names"]), tracked, size)
            if plan is not None:
                self._lay_out(plan)
                self._stale = True  # parameters trainable but absent from the state: next update
        check_state(state, self.names, self.step_form, self.num_tracked)
        mean = state["previous"] if state["mean"] is None else state["mean"]
        if self._mean is not None:
            self._mean.copy_(mean)
        elif not torch.equal(mean, state["previous"]):
            raise ValueError(
                "this checkpoint's tracked mean is not its w(t-1): it was made with another start "
                "(tradi 0.1.0's default was the public code's); build the tracker with "
                "init_mean='zero' (and init_variance='public_code') to resume it"
            )
        self._var.copy_(state["variance"])
        self._var_scale = float(state.get("variance_scale", 1.0))  # absent in older ones
        if self._mean is not None:  # only the floor keeps a scale
            self._var.mul_(self._var_scale)
            self._var_scale = 1.0
        if self._previous is not None:
            self._previous.copy_(state["previous"])
        self._p_mean = float(state["p_mean"])
        self._p_var = float(state["p_var"])
        self.num_updates = int(state["num_updates"])
        self.num_skipped = int(state["num_skipped"])

    @property
    def state_bytes(self) -> int:
        """Bytes of per-weight state: variance, and the mean and w(t-1) where stored."""
        kept = [t for t in (self._mean, self._var, self._previous) if t is not None]
        return sum(t.numel() * t.element_size() for t in kept)

    @property
    def num_tracked(self) -> int:
        return self._var.numel()
