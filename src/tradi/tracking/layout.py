"""Which parameters a `WeightTracker` follows while the model changes under it (docs/tracker.md,
"Models that change during training").

Training code changes models: a backbone frozen at first is unfrozen (fine-tuning), a head is
replaced or a layer appended (transfer learning), a tensor is swapped in place. The tracker's
state is flat vectors laid out parameter by parameter, so it must notice such changes and lay
its state out again, keeping the state of every parameter that is still the same tensor.

Noticing must cost (almost) nothing per step: walking the modules takes ~35 µs on the paper's MLP
and more on deep networks, next to an update of ~200 µs. So a walk happens only when something
may have changed:
- torch's global registration hooks (`register_module_module_registration_hook`,
  `register_module_parameter_registration_hook`) bump a process-wide counter whenever any
  module or parameter is assigned anywhere (`model[2] = nn.Linear(...)`, `model.append(...)`,
  `layer.weight = nn.Parameter(...)`; also any module built, which costs one spare walk);
- the parameters frozen at the last walk are checked for `requires_grad` (a list of flags),
  and the tracked ones for their size (`numel()`);
- a failed update, and `load_state_dict`, force a walk.
Hand-written because no library follows a model's parameter set (torch's hooks report single
assignments, not what a flat state must do about them).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tradi.distributed.sharded import local_shard
from tradi.plumbing.structure import named_parameters_with_owner
from tradi.tracking.start import InitMean, InitVariance, initial_variance

ParamFilter = Callable[[str, nn.Module, nn.Parameter], bool]

#: The flat state vectors, in this order: sigma2 (/ the floor's scale), mu, w(t-1).
KEYS = ("variance", "mean", "previous")

_generation = 0
_hooked = False


def _bump(*_: object) -> None:
    global _generation
    _generation += 1


def generation() -> int:
    """A counter that changes whenever a module or parameter is assigned anywhere in the process
    (installs the global hooks on the first call)."""
    global _hooked
    if not _hooked:
        nn.modules.module.register_module_module_registration_hook(_bump)
        nn.modules.module.register_module_parameter_registration_hook(_bump)
        _hooked = True
    return _generation


@dataclass
class Changes:
    """What differs between the tracked parameters and a model's, by parameter name."""

    replaced: list[str] = field(default_factory=list)  # another tensor object under the name
    reshaped: list[str] = field(default_factory=list)  # the same tensor with another shape
    removed: list[str] = field(default_factory=list)  # tracked, no longer in the model
    new: list[str] = field(default_factory=list)  # selected now, not tracked (new names)
    unfrozen: list[str] = field(default_factory=list)  # frozen before, trainable now
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def breaking(self) -> bool:
        """Whether the tracked state no longer describes the model (sampling would be wrong)."""
        return bool(self.replaced or self.reshaped or self.removed)

    def describe(self) -> str:
        """E.g. "replaced ['2.weight', '2.bias'] (new tensor objects), new ['3.weight']"."""
        parts = []
        if self.replaced:
            parts.append(f"replaced {self.replaced} (new tensor objects)")
        if self.reshaped:
            moves = ", ".join(f"{a} -> {b}" for a, b in (self.shapes[n] for n in self.reshaped))
            parts.append(f"reshaped {self.reshaped} ({moves})")
        if self.removed:
            parts.append(f"removed {self.removed}")
        if self.new:
            parts.append(f"new {self.new}")
        if self.unfrozen:
            parts.append(f"trainable since {self.unfrozen}")
        return ", ".join(parts)


@dataclass
class Plan:
    """The parameters to track, in the model's order, which of them keep their state, the
    untracked frozen ones to watch, and the changes against the tracked set."""

    named: list[tuple[str, nn.Parameter]]
    carried: set[str]
    watched: list[nn.Parameter]
    changes: Changes


def select(
    model: nn.Module,
    keep: ParamFilter,
    tracked: Mapping[str, nn.Parameter],
    shapes: Mapping[str, torch.Size],
    same_objects: bool = True,
    was_watched: Collection[int] = (),
) -> Plan:
    """Walk `model` and plan the tracked set: a tracked name keeps its state while it names the
    same tensor (`same_objects`; by name alone for another model) of the same whole shape, even
    if the filter would now refuse it (frozen again); any other parameter is tracked afresh if
    `keep` selects it. `watched` are the untracked frozen parameters (they may be unfrozen); a
    new one whose id is in `was_watched` is reported as unfrozen, not new."""
    named, carried, watched, changes = [], set(), [], Changes()
    present = set()
    for name, module, param in named_parameters_with_owner(model):
        present.add(name)
        old = tracked.get(name)
        same = old is not None and (old is param or not same_objects)
        if same and param.shape == shapes[name]:
            named.append((name, param))
            carried.add(name)
            continue
        if old is not None and same:
            changes.reshaped.append(name)
            changes.shapes[name] = (tuple(shapes[name]), tuple(param.shape))
        elif old is not None:
            changes.replaced.append(name)
        if keep(name, module, param):
            named.append((name, param))
            if old is None:
                (changes.unfrozen if id(param) in was_watched else changes.new).append(name)
        elif old is not None:
            changes.removed.append(name)
        elif not param.requires_grad:
            watched.append(param)
    changes.removed += [n for n in tracked if n not in present]
    return Plan(named, carried, watched, changes)


def lay_out(
    keys: Sequence[str],
    old: Mapping[str, Tensor],
    old_names: Sequence[str],
    old_sizes: Sequence[int],
    plan: Plan,
    start: tuple[InitMean, InitVariance],
) -> dict[str, Tensor]:
    """The flat state vectors named by `keys` ("variance", "mean", "previous") for `plan`: the
    carried parameters' chunks of `old` (laid out as `old_names` / `old_sizes`; the variance
    unscaled), the others started as at construction (`start`: mu = w or 0, sigma2(0);
    w(t-1) = w), all in `state_dtype` of the planned parameters (flat, contiguous, new)."""
    dtype = state_dtype([p for _, p in plan.named])
    init_mean, init_variance = start

    def fresh(key: str, p: nn.Parameter) -> Tensor:
        w = local_shard(p.detach())
        if key == "variance":
            return initial_variance(init_variance, [w.numel()], [p.shape], w.device, dtype)
        return torch.zeros_like(w) if key == "mean" and init_mean == "zero" else w

    out = {}
    for key in keys:
        flat = old.get(key)
        chunks = (
            {} if flat is None else dict(zip(old_names, flat.split(list(old_sizes)), strict=True))
        )
        parts = [
            (chunks[n] if n in plan.carried else fresh(key, p)).reshape(-1).to(dtype)
            for n, p in plan.named
        ]
        out[key] = torch.cat(parts)
    return out


def plan_names(
    model: nn.Module, names: Sequence[str], tracked: Mapping[str, nn.Parameter], size: int
) -> Plan | None:
    """A plan tracking exactly `names` (a checkpoint's) in their order, or None when `model`
    lacks one of them or their local sizes do not add up to `size`."""
    present = {n: p for n, _, p in named_parameters_with_owner(model)}
    if len(set(names)) != len(names) or not all(n in present for n in names):
        return None
    if sum(local_shard(present[n]).numel() for n in names) != size:
        return None
    carried = {n for n in names if tracked.get(n) is present[n]}
    return Plan([(n, present[n]) for n in names], carried, [], Changes())


def update_warning(changes: Changes) -> str:
    """The RuntimeWarning of an update that found the model's parameters changed."""
    return (
        f"WeightTracker.update(): the model's parameters changed since the last update: "
        f"{changes.describe()}. The state of tensors no longer in the model is dropped; the "
        "changed and new parameters are tracked afresh from their current weights (their "
        "variance restarts from sigma2(0))"
    )


def untracked_warning(names: list[str]) -> str:
    """The RuntimeWarning of a posterior drawn while trainable parameters are not tracked."""
    return (
        f"WeightTracker: trainable parameters not tracked yet {names}: every sampled network "
        "keeps their current weights; call tracker.update() after each optimizer.step() that "
        "trains them"
    )


def sampling_error(changes: Changes) -> str:
    """The ValueError of a posterior drawn after the model changed (no update since)."""
    return (
        "WeightTracker: the model changed after the last tracker.update(): "
        f"{changes.describe()}; the tracked state describes the old parameters, so samples "
        "would carry their values into the new ones. Call tracker.update() after changing the "
        "model (it tracks the changed parameters afresh from their current weights) before "
        "drawing a posterior, or pass the model the tracker followed"
    )


def state_dtype(params: Sequence[nn.Parameter]) -> torch.dtype:
    """float64 state for float64 weights (float32 state would round away steps below ~1e-7 of a
    weight, docs/tracker.md), else float32 (also for bf16 / fp16 weights)."""
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
