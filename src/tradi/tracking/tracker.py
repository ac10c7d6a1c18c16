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
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tradi.posterior import DiagonalGaussian, KernelGaussian, WeightPosterior
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


def _named_parameters_with_owner(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Parameter]]:
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            yield (f"{module_name}.{param_name}" if module_name else param_name), module, param


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

    State is float32 whatever the parameters' dtype. Parameter names are the model's own.
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
        named = [(n, p) for n, m, p in _named_parameters_with_owner(model) if keep(n, m, p)]
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

        weights = [p.detach().float() for p in self._params]
        if init_mean == "weights":
            self._mean = [w.clone() for w in weights]
        else:
            self._mean = [torch.zeros_like(w) for w in weights]
        self._var = [
            torch.full_like(
                w,
                init_variance
                if init_variance is not None
                else math.sqrt(2.0 / (w.shape[0] if w.dim() else 1)),
            )
            for w in weights
        ]
        self._previous = [w.clone() for w in weights] if step == "delta" else []

    # ------------------------------------------------------------------ the Kalman step
    @torch.no_grad()
    def update(self) -> bool:
        """One Kalman step after `optimizer.step()`. Returns False if the step was skipped.

        A non-finite step (NaN/Inf in the weights or in d) is skipped for the whole model and
        leaves the state exactly as it was; skips are counted and reported by one warning.
        """
        weights = [p.detach().float() for p in self._params]
        if self.step_form == "delta":
            steps = torch._foreach_sub(weights, self._previous)
            checked = steps  # prev is finite by induction, so d finite <=> w finite
        else:
            steps = self._gradient_steps()
            checked = [*steps, *weights]
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(checked))).all()):
            self._skip()
            return False

        k_mean, self._p_mean = gain_step(self._p_mean, self.config.q_mean, self.config.r_mean)
        k_var, self._p_var = gain_step(self._p_var, self.config.q_var, self.config.r_var)
        torch._foreach_add_(self._mean, steps)
        torch._foreach_lerp_(self._mean, weights, k_mean)
        residual = torch._foreach_sub(weights, self._mean)
        torch._foreach_mul_(residual, residual)
        torch._foreach_mul_(steps, steps)
        torch._foreach_add_(self._var, steps)
        torch._foreach_lerp_(self._var, residual, k_var)
        if self.step_form == "delta":
            torch._foreach_copy_(self._previous, weights)
        self.num_updates += 1
        return True

    def _gradient_steps(self) -> list[Tensor]:
        assert self.optimizer is not None
        lr_of = {
            id(p): group["lr"] for group in self.optimizer.param_groups for p in group["params"]
        }
        grads = [
            p.grad.detach().float() if p.grad is not None else torch.zeros_like(m)
            for p, m in zip(self._params, self._mean, strict=True)
        ]
        scales = [-float(lr_of.get(id(p), 0.0)) for p in self._params]
        return torch._foreach_mul(grads, scales)

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
    def mean(self) -> dict[str, Tensor]:
        """Tracked means {parameter name: float32 tensor} (copies)."""
        return {n: t.clone() for n, t in zip(self.names, self._mean, strict=True)}

    def variance(self) -> dict[str, Tensor]:
        """Tracked variances {parameter name: float32 tensor} (copies)."""
        return {n: t.clone() for n, t in zip(self.names, self._var, strict=True)}

    def weights(self) -> dict[str, Tensor]:
        """Current weights of the tracked parameters (float32 copies): w* for the kernel."""
        return {
            n: p.detach().float().clone() for n, p in zip(self.names, self._params, strict=True)
        }

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
        """
        if covariance == "diag":
            return DiagonalGaussian(self.mean(), self.variance(), scale=scale)
        if covariance == "kernel":
            return KernelGaussian(
                self.mean(), self.variance(), self.weights(), rank=rank, scale=scale, phase=phase
            )
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
            "mean": [t.clone() for t in self._mean],
            "variance": [t.clone() for t in self._var],
            "previous": [t.clone() for t in self._previous],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["names"] != self.names or state["step_form"] != self.step_form:
            raise ValueError(
                "tracker state does not match this tracker: saved names/step form "
                f"{len(state['names'])} params/{state['step_form']!r}, "
                f"here {len(self.names)} params/{self.step_form!r}"
            )
        for key, mine in (
            ("mean", self._mean),
            ("variance", self._var),
            ("previous", self._previous),
        ):
            saved = state[key]
            if len(saved) != len(mine) or any(
                s.shape != m.shape for s, m in zip(saved, mine, strict=True)
            ):
                raise ValueError(f"tracker state {key!r} has shapes that do not match the model")
            torch._foreach_copy_(mine, [s.to(m.device) for s, m in zip(saved, mine, strict=True)])
        self._p_mean = float(state["p_mean"])
        self._p_var = float(state["p_var"])
        self.num_updates = int(state["num_updates"])
        self.num_skipped = int(state["num_skipped"])

    @property
    def state_bytes(self) -> int:
        """Bytes of per-weight state (mean, variance and, for step="delta", w(t-1))."""
        return sum(t.numel() * t.element_size() for t in (*self._mean, *self._var, *self._previous))

    @property
    def num_tracked(self) -> int:
        return sum(t.numel() for t in self._mean)
