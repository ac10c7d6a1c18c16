"""`WeightTracker`: TRADI's Kalman tracking of each weight's mean and variance during training.

Call `tracker.update()` right after every `optimizer.step()`. Per step and per weight:

    d      = w(t) - w(t-1)               (step="delta", default: the step the optimizer took)
           = -lr * grad                  (step="gradient": the paper's and public code's form)
    mu     = (1 - K_mu) (mu + d)     + K_mu w(t)
    sigma2 = (1 - K_s2) (sigma2 + d^2) + K_s2 (w(t) - mu)^2      (mu: the value just updated)

with scalar gains K from `tradi.tracking.kalman`. The variance measurement is the public code's
(w - mu)^2, not the slides' w^2 - mu^2 form (see TRADI.md section 2 and docs/tracker.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tradi.distributed.sharded import gather_like, is_sharded, local_shard
from tradi.posterior import DiagonalGaussian, KernelGaussian, WeightPosterior
from tradi.structure import named_parameters_with_owner
from tradi.tracking.kalman import KalmanConfig, gain_step

StepForm = Literal["delta", "gradient"]
ParamFilter = Callable[[str, nn.Module, nn.Parameter], bool]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def default_param_filter(name: str, module: nn.Module, param: nn.Parameter) -> bool:
    """Track trainable parameters except normalisation layers' affine ones (chosen by type).

    TRADI keeps BatchNorm affine parameters and running statistics from the trained network.
    """
    return param.requires_grad and not isinstance(module, _NORM_TYPES)


class WeightTracker:
    """Tracks mean and variance of every selected weight of `model` with TRADI's Kalman filters.

    Args:
        model: the network being trained (never modified by the tracker).
        step: "delta" uses the real weight change (right for momentum, Adam, weight decay,
            clipping; stores w(t-1): 12 bytes per weight in all); "gradient" uses -lr * grad as
            the paper does (needs `optimizer` to read each parameter's current learning rate).
        optimizer: required for step="gradient".
        config: noise constants; `KalmanConfig.from_memory(...)` gives them as memories in steps.
        init_mean: "zero" (public code) or "weights" (mu(0) = w(0)).
        init_variance: sigma2(0); None is the public code's sqrt(2 / size(0)) per tensor.
        param_filter: `(name, owning module, parameter) -> bool`; overrides the default that
            skips normalisation layers and frozen parameters.

    State is float32 whatever the parameters' dtype. Parameter names are the model's own with
    every wrapper looked through (DDP, DataParallel, torch.compile, ...; `tradi.structure`), and
    a tied tensor is tracked once, under its first name: state moves between a wrapped and a
    plain model. A lazy layer must have run one forward pass first (else a ValueError).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        step: StepForm = "delta",
        optimizer: torch.optim.Optimizer | None = None,
        config: KalmanConfig | None = None,
        init_mean: Literal["zero", "weights"] = "zero",
        init_variance: float | None = None,
        param_filter: ParamFilter | None = None,
    ) -> None:
        if step not in ("delta", "gradient"):
            raise ValueError(f"step must be 'delta' or 'gradient', got {step!r}")
        if step == "gradient" and optimizer is None:
            raise ValueError("step='gradient' reads the learning rate: pass optimizer=")
        if init_mean not in ("zero", "weights"):
            raise ValueError(f"init_mean must be 'zero' or 'weights', got {init_mean!r}")
        if init_variance is not None and init_variance < 0:
            raise ValueError(f"init_variance must be >= 0, got {init_variance}")
        keep = param_filter or default_param_filter
        named = [(n, p) for n, m, p in named_parameters_with_owner(model) if keep(n, m, p)]
        if not named:
            raise ValueError("no parameter of the model is selected for tracking")
        self.step_form: StepForm = step
        self.optimizer = optimizer
        self.config = config or KalmanConfig()
        self.names: list[str] = [n for n, _ in named]
        self._params: list[nn.Parameter] = [p for _, p in named]
        self._p_mean = self._p_var = self.config.p0
        self.num_updates = 0
        self.num_skipped = 0
        self._warned = False

        # under FSDP2 the state covers this rank's shard of each parameter only
        self._shapes = [local_shard(p).shape for p in self._params]
        self._sizes = [local_shard(p).numel() for p in self._params]
        weights = self._gather_weights()
        self._mean = weights.clone() if init_mean == "weights" else torch.zeros_like(weights)
        self._var = torch.cat(
            [
                torch.full(
                    (n,),
                    init_variance
                    if init_variance is not None
                    else math.sqrt(2.0 / max(shape[0] if len(shape) else 1, 1)),
                    device=weights.device,
                )
                for n, shape in zip(self._sizes, [p.shape for p in self._params], strict=True)
            ]
        )
        # w(t-1) is only needed for the real step; views give per-parameter access to flat state
        self._previous: Tensor | None = weights if step == "delta" else None
        self._mean_views = self._views(self._mean)
        self._previous_views = [] if self._previous is None else self._views(self._previous)

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [c.view(s) for c, s in zip(flat.split(self._sizes), self._shapes, strict=True)]

    def _gather_weights(self) -> Tensor:
        """All tracked weights as one flat float32 vector."""
        return torch.cat([local_shard(p.detach()).reshape(-1) for p in self._params]).float()

    # ------------------------------------------------------------------ the Kalman step
    @torch.no_grad()
    def update(self) -> bool:
        """One Kalman step after `optimizer.step()`. Returns False if the step was skipped.

        A non-finite step (NaN/Inf in the weights or in d) is skipped for the whole model and
        leaves the state exactly as it was; skips are counted and reported by one warning.
        """
        k_mean, p_mean = gain_step(self._p_mean, self.config.q_mean, self.config.r_mean)
        k_var, p_var = gain_step(self._p_var, self.config.q_var, self.config.r_var)
        done = (
            self._update_delta(k_mean, k_var)
            if self.step_form == "delta"
            else self._update_gradient(k_mean, k_var)
        )
        if not done:
            self._skip()
            return False
        self._p_mean, self._p_var = p_mean, p_var
        self.num_updates += 1
        return True

    def _update_delta(self, k_mean: float, k_var: float) -> bool:
        """d = w - w(t-1), without allocating: the hot path, in place on the flat state.

        With d = w - prev the equations simplify exactly to
            mu_new = w + (1 - K_mu) (mu - prev),   w - mu_new = (1 - K_mu) (prev - mu),
            sigma2_new = (1 - K_s2) (sigma2 + d^2) + K_s2 (1 - K_mu)^2 (prev - mu)^2.
        """
        assert self._previous is not None
        weights = [local_shard(p.detach()) for p in self._params]
        weights = [w if w.dtype == torch.float32 else w.float() for w in weights]
        # w(t-1) is finite by induction, so d is finite iff w is; the norms are NaN/Inf iff
        # some weight is (or if they overflow: such a step is skipped too)
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(weights))).all()):
            return False
        mean, var, prev = self._mean, self._var, self._previous
        var.mul_(1.0 - k_var)
        mean.sub_(prev)  # mu - prev
        var.addcmul_(mean, mean, value=k_var * (1.0 - k_mean) ** 2)
        mean.mul_(1.0 - k_mean)
        torch._foreach_add_(self._mean_views, weights)  # mu_new
        torch._foreach_sub_(self._previous_views, weights)  # prev - w = -d
        var.addcmul_(prev, prev, value=1.0 - k_var)
        torch._foreach_copy_(self._previous_views, weights)  # prev = w
        return True

    def _update_gradient(self, k_mean: float, k_var: float) -> bool:
        """d = -lr * grad, the paper's form: the general equations on gathered copies."""
        assert self.optimizer is not None
        lr_of = {
            id(p): group["lr"] for group in self.optimizer.param_groups for p in group["params"]
        }
        steps = torch.cat(
            [
                (local_shard(p.grad.detach()).reshape(-1).float() * -float(lr_of.get(id(p), 0.0)))
                if p.grad is not None
                else torch.zeros(n, device=self._mean.device)
                for p, n in zip(self._params, self._sizes, strict=True)
            ]
        )
        weights = self._gather_weights()
        if not bool(torch.isfinite(steps.sum() + weights.sum())):
            return False
        self._mean.add_(steps).lerp_(weights, k_mean)
        residual = weights.sub_(self._mean).square_()
        self._var.addcmul_(steps, steps).lerp_(residual, k_var)
        return True

    def _skip(self) -> None:
        self.num_skipped += 1
        if not self._warned:
            warnings.warn(
                "WeightTracker: non-finite weights or step; this step is skipped and the "
                "tracked state left unchanged (see tracker.num_skipped for the count)",
                RuntimeWarning,
                stacklevel=3,
            )
            self._warned = True

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
        """Tracked means {parameter name: float32 tensor} (copies; this rank's shards under
        FSDP2: `posterior()` gathers them)."""
        return self._unflatten(self._mean)

    def variance(self) -> dict[str, Tensor]:
        """Tracked variances {parameter name: float32 tensor} (copies)."""
        return self._unflatten(self._var)

    def weights(self) -> dict[str, Tensor]:
        """Current weights of the tracked parameters (float32 copies): w* for the kernel."""
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
        """
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
            "mean": self._mean.clone(),
            "variance": self._var.clone(),
            "previous": None if self._previous is None else self._previous.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["step_form"] != self.step_form:
            raise ValueError(
                f"tracker state was saved with step={state['step_form']!r}, this tracker uses "
                f"step={self.step_form!r}: build it with the same step form"
            )
        if state["names"] != self.names:
            raise ValueError(
                f"tracker state does not match this model: {_name_difference(state['names'], self.names)}"
            )
        if state["mean"].shape != self._mean.shape:
            raise ValueError(
                f"tracker state holds {state['mean'].numel()} weights, this model "
                f"{self._mean.numel()}"
            )
        self._mean.copy_(state["mean"])
        self._var.copy_(state["variance"])
        if self._previous is not None:
            self._previous.copy_(state["previous"])
        self._p_mean = float(state["p_mean"])
        self._p_var = float(state["p_var"])
        self.num_updates = int(state["num_updates"])
        self.num_skipped = int(state["num_skipped"])

    @property
    def state_bytes(self) -> int:
        """Bytes of per-weight state (mean, variance and, for step="delta", w(t-1))."""
        kept = [self._mean, self._var] + ([] if self._previous is None else [self._previous])
        return sum(t.numel() * t.element_size() for t in kept)

    @property
    def num_tracked(self) -> int:
        return self._mean.numel()


def _name_difference(saved: list[str], here: list[str]) -> str:
    """What differs between two lists of parameter names, shortly."""
    saved_set, here_set = set(saved), set(here)
    missing = [n for n in saved if n not in here_set]
    extra = [n for n in here if n not in saved_set]
    if not missing and not extra:
        return "the same parameters in another order"
    return (
        f"saved parameters absent here {missing[:5]}, parameters here absent from the state "
        f"{extra[:5]} ({len(missing)} and {len(extra)} in all)"
    )
