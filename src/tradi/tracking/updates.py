"""The per-weight Kalman step of `WeightTracker`, in place on flat state (float32; float64 for
float64 weights).

Each function applies one step of TRADI's two filters (TRADI.md section 2; docs/tracker.md) and
returns what happened: `DONE`, or why the step was skipped (`NON_FINITE`, `NOT_STEPPED`), in
which case the state is left exactly as it was. A step is `NOT_STEPPED` when the optimizer did
not move any tracked weight (e.g. `torch.amp.GradScaler` skipping a step with an inf gradient):
both step forms treat it as no step at all.

`weights` are the tracked parameters (any dtype, their own shapes); `*_views` are views of the
flat state with the same shapes, so multi-tensor (`torch._foreach_*`) ops read the weights where
they are and every other op is one pass over a flat vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import Tensor, nn

from tradi.distributed.sharded import local_shard
from tradi.tracking.fused import floor_step


class Outcome(Enum):
    DONE = "done"
    NON_FINITE = "non_finite"  # NaN/Inf in the weights or in the step: the run diverged
    NOT_STEPPED = "not_stepped"  # the optimizer skipped its step (no tracked weight moved)


# entries of -d sampled by the floor's cheap test that some weight moved
_PROBES = 64
# the floor folds its variance scale into the stored vector when the scale falls below this
RESCALE_BELOW = 1e-6


def _all_finite(tensors: list[Tensor]) -> bool:
    # a sum is NaN/Inf iff some entry is (or if it overflows: such a step is skipped too)
    sums = [t.sum() for t in tensors]
    if sums[0].is_cpu:  # a Python float per tensor is cheaper than a stack (or than norms)
        return math.isfinite(sum(float(s) for s in sums))
    return math.isfinite(float(torch.stack(sums).sum()))  # one host synchronisation


def _moved(minus_d: Tensor, prev_views: list[Tensor], weights: list[Tensor]) -> bool:
    """True if some d != 0; else restores w(t-1) (= w(t) exactly, as every d == 0)."""
    low, high = torch.aminmax(minus_d)  # one vectorised pass; Tensor.any() is ~50x slower
    if bool((low != 0) | (high != 0)):
        return True
    torch._foreach_copy_(prev_views, weights)
    return False


def update_floor(
    var: Tensor, scale: float, prev: Tensor, prev_views: list[Tensor], weights: list[Tensor]
) -> Outcome:
    """d = w - w(t-1) with mu(0) = w(0): then mu(t) = w(t) at every step and mu is not stored.

    The mean update gives mu(t) - w(t) = (1 - K_mu)(mu(t-1) - w(t-1)) = 0, so the variance
    measurement (w - mu)^2 vanishes and sigma2 = (1 - K_s2)(sigma2 + d^2). State: sigma2 and
    w(t-1) (8 bytes per weight); the mean is w(t-1) after the update, i.e. the current weights.
    `var` holds sigma2 / scale: the step adds d^2 / scale in one pass and the caller multiplies
    `scale` by (1 - K_s2) (`next_scale`). Passes over the state: the weights' sums, -d into
    w(t-1), the variance and the copy of the weights; the test that some weight moved reads
    `_PROBES` entries of -d, and all of them only when those are all 0. On the CPU the same
    step runs as one compiled pass where it can (`tradi.tracking.fused`).
    """
    fused = floor_step(var, scale, prev, weights)
    if fused is not None:
        return (Outcome.DONE, Outcome.NON_FINITE, Outcome.NOT_STEPPED)[fused]
    if not _all_finite(weights):
        return Outcome.NON_FINITE
    torch._foreach_sub_(prev_views, weights)  # prev = w(t-1) - w = -d
    probe = prev[:: max(1, prev.numel() // _PROBES)]
    if not bool(torch.count_nonzero(probe)) and not _moved(prev, prev_views, weights):
        return Outcome.NOT_STEPPED
    var.addcmul_(prev, prev, value=1.0 / scale)
    torch._foreach_copy_(prev_views, weights)
    return Outcome.DONE


def next_scale(var: Tensor, scale: float, k_var: float) -> float:
    """The floor's scale after a done step (sigma2 = scale * var): scale * (1 - K_s2), folded
    into `var` (one pass) once it falls below `RESCALE_BELOW`, every ~14 / K_s2 steps, so that
    `var` stays within a factor 1e6 of sigma2, far from float32 overflow."""
    scale *= 1.0 - k_var
    if scale >= RESCALE_BELOW:
        return scale
    var.mul_(scale)
    return 1.0


def update_delta(
    mean: Tensor,
    var: Tensor,
    prev: Tensor,
    views: tuple[list[Tensor], list[Tensor]],
    weights: list[Tensor],
    gains: tuple[float, float],
) -> Outcome:
    """d = w - w(t-1), any start mu(0): rewritings that need no temporary buffer.

    With d = w - prev the equations become
        mu_new = w + (1 - K_mu) (mu - prev),   w - mu_new = (1 - K_mu) (prev - mu),
        sigma2_new = (1 - K_s2) (sigma2 + d^2) + K_s2 (1 - K_mu)^2 (prev - mu)^2,
    with mu - prev computed as (mu - w) + d. `views` are (mean views, prev views).
    """
    mean_views, prev_views = views
    k_mean, k_var = gains
    if not _all_finite(weights):
        return Outcome.NON_FINITE
    torch._foreach_sub_(prev_views, weights)  # prev = -d
    if not _moved(prev, prev_views, weights):
        return Outcome.NOT_STEPPED
    torch._foreach_sub_(mean_views, weights)
    mean.sub_(prev)  # mu - w + d = mu - w(t-1)
    var.mul_(1.0 - k_var)
    var.addcmul_(mean, mean, value=k_var * (1.0 - k_mean) ** 2)
    var.addcmul_(prev, prev, value=1.0 - k_var)
    mean.mul_(1.0 - k_mean)
    torch._foreach_add_(mean_views, weights)  # mu_new
    torch._foreach_copy_(prev_views, weights)  # prev = w
    return Outcome.DONE


def update_gradient(
    mean: Tensor, var: Tensor, steps: Tensor, weights: Tensor, gains: tuple[float, float]
) -> Outcome:
    """d = -lr * grad (the paper's form) on gathered flat copies `steps` and `weights`.

    A non-finite d with finite weights is a step the optimizer did not apply (GradScaler found
    an inf gradient and skipped it): `NOT_STEPPED`, like the delta form's all-zero step.
    """
    k_mean, k_var = gains
    if not bool(torch.isfinite(weights.sum())):
        return Outcome.NON_FINITE
    if not bool(torch.isfinite(steps.sum())):
        return Outcome.NOT_STEPPED
    mean.add_(steps).lerp_(weights, k_mean)
    residual = weights.sub_(mean).square_()
    var.addcmul_(steps, steps).lerp_(residual, k_var)
    return Outcome.DONE


def gradient_steps(
    params: Sequence[nn.Parameter],
    sizes: Sequence[int],
    optimizer: torch.optim.Optimizer,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """d = -lr * grad as one flat vector of `dtype` (the state's), with each parameter's current
    learning rate from `optimizer` (this rank's shard under FSDP2; 0 for a parameter without a
    gradient)."""
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return torch.cat(
        [
            (local_shard(p.grad.detach()).reshape(-1).to(dtype) * -float(lr_of.get(id(p), 0.0)))
            if p.grad is not None
            else torch.zeros(n, device=p.device, dtype=dtype)
            for p, n in zip(params, sizes, strict=True)
        ]
    )
