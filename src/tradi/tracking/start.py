"""The tracker's start: the parameters it tracks, its options and checkpoints checked, the
initial variance, and the warning for a posterior drawn too early (docs/tracker.md)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tradi.tracking.kalman import KalmanConfig

StepForm = Literal["delta", "gradient"]
InitMean = Literal["weights", "zero"]
InitVariance = float | Literal["public_code"]

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


def check_options(
    step: str,
    optimizer: torch.optim.Optimizer | None,
    memory: float | None,
    config: KalmanConfig | None,
    init_mean: str,
    init_variance: object,
) -> None:
    """Raise ValueError, saying what to pass instead, for an invalid `WeightTracker` option."""
    if step not in ("delta", "gradient"):
        raise ValueError(f"step must be 'delta' or 'gradient', got {step!r}")
    if step == "gradient" and optimizer is None:
        raise ValueError("step='gradient' reads the learning rate: pass optimizer=")
    if memory is not None and config is not None:
        raise ValueError("pass memory= (in steps) or config= (noise constants), not both")
    if memory is not None and not memory > 1:
        raise ValueError(
            f"memory is in optimizer steps and must be > 1 (e.g. the steps per epoch), got {memory}"
        )
    if init_mean not in ("weights", "zero"):
        raise ValueError(f"init_mean must be 'weights' or 'zero', got {init_mean!r}")
    if init_variance != "public_code" and not (
        isinstance(init_variance, int | float) and init_variance >= 0
    ):
        raise ValueError(
            f"init_variance must be a number >= 0 or 'public_code', got {init_variance!r}"
        )


def initial_variance(
    init_variance: InitVariance,
    sizes: Sequence[int],
    shapes: Sequence[torch.Size],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """sigma2(0) as one flat vector of `dtype` over tensors of `sizes` (local shards) and whole
    `shapes`: the number, or the public code's sqrt(2 / size(0)) of each whole tensor."""
    kw = {"device": device, "dtype": dtype}
    if init_variance != "public_code":
        return torch.full((sum(sizes),), float(init_variance), **kw)
    return torch.cat(
        [
            torch.full((n,), math.sqrt(2.0 / max(shape[0] if len(shape) else 1, 1)), **kw)
            for n, shape in zip(sizes, shapes, strict=True)
        ]
    )


def early_posterior_message(num_updates: int, config: KalmanConfig) -> str | None:
    """Why a posterior drawn now is premature and what to do, or None if it is not."""
    memory = round(1.0 / config.steady_state_gains[1])
    if num_updates == 0:
        return (
            "WeightTracker.posterior(): no update yet, so the variance is the initial one "
            "(0 by default: every sample is the network itself); call tracker.update() after "
            "every optimizer.step() before drawing"
        )
    if num_updates < memory:
        return (
            f"WeightTracker.posterior(): {num_updates} updates, fewer than the filters' memory "
            f"(~{memory} steps), so the variance sums fewer squared steps than it will later; "
            "pass memory=<steps per epoch> (or fewer) to WeightTracker, or choose the sampling "
            "scale on validation data"
        )
    return None


@contextlib.contextmanager
def scale_chosen_on_validation() -> Iterator[None]:
    """Silence the warning that the variance filter's memory has not filled yet, for posteriors
    whose scale is being chosen on validation data: that is the warning's own remedy (the
    search widens the samples as far as validation data allows). The warning that no update
    was made at all stays: no scale helps a zero variance."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"WeightTracker\.posterior\(\): \d+ updates, fewer than"
        )
        yield


def check_state(state: dict[str, Any], names: list[str], step_form: str, num_weights: int) -> None:
    """Raise ValueError if a tracker `state_dict()` is not of this model and step form."""
    if state["step_form"] != step_form:
        raise ValueError(
            f"tracker state was saved with step={state['step_form']!r}, this tracker uses "
            f"step={step_form!r}: build it with the same step form"
        )
    if state["names"] != names:
        raise ValueError(
            f"tracker state does not match this model: {_name_difference(state['names'], names)}"
        )
    if state["variance"].numel() != num_weights:
        raise ValueError(
            f"tracker state holds {state['variance'].numel()} weights, this model {num_weights}"
        )


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
