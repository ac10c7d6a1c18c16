"""The saved form of an `Exploration` (`Exploration.state_dict`, `Exploration.from_state_dict`):
plain types and tensors only, so that ``torch.load(f, weights_only=True)`` reads it back.

The networks are saved by their own parameter names (`tradi.plumbing.structure.unwrap`), so a
state moves between a wrapped and a plain template. A tracker that several modes share (explore
without ``tracker=``: the trained network's mode takes the first cycle's tracker) is saved once,
with the modes that use it and the mode whose network it follows: rebuilt on that network, it
gives the same mean, variance and anchor weights, hence the same predictive bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tradi.plumbing.structure import unwrap
from tradi.tracking import KalmanConfig, WeightTracker

#: What ``state["format"]`` holds, and the version of the layout this module reads and writes.
FORMAT = "tradi.Exploration"
VERSION = 1

#: The keys of a saved `Exploration`.
KEYS = (
    "format",
    "version",
    "modes",
    "trackers",
    "tracker_configs",
    "tracker_of_mode",
    "tracker_follows",
    "scale",
    "search",
    "runs",
    "last_layer",
    "link",
    "n_samples",
    "seed",
    "cost_epochs",
    "seconds",
)


def trackers_state(modes: Sequence[nn.Module], trackers: Sequence[WeightTracker]) -> dict[str, Any]:
    """The distinct trackers' states and Kalman constants (a shared tracker once), the index of
    each mode's tracker among them, and for each the mode whose network it follows (its own
    network when it follows a mode's; else the first mode that uses it: the trained network's
    tracker follows the user's network, whose weights that mode copies)."""
    distinct: list[WeightTracker] = []
    for tracker in trackers:
        if not any(tracker is seen for seen in distinct):
            distinct.append(tracker)
    index = [next(j for j, seen in enumerate(distinct) if seen is t) for t in trackers]
    follows = []
    for j, tracker in enumerate(distinct):
        own = [i for i, mode in enumerate(modes) if tracker._model is mode]
        follows.append(own[0] if own else index.index(j))
    return {
        "trackers": [tracker.state_dict() for tracker in distinct],
        "tracker_configs": [dataclasses.asdict(tracker.config) for tracker in distinct],
        "tracker_of_mode": index,
        "tracker_follows": follows,
    }


def check_saved(state: Any) -> None:
    """Raise ValueError, saying what differs, unless ``state`` is this version's saved
    `Exploration` with consistent counts."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"not a saved Exploration (format {found!r}, expected {FORMAT!r}): pass the output "
            "of Exploration.state_dict()"
        )
    if state.get("version") != VERSION:
        raise ValueError(
            f"a saved Exploration of version {state.get('version')!r}; this tradi reads version "
            f"{VERSION}: run explore again"
        )
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise ValueError(f"the saved Exploration lacks {missing}")
    modes, trackers = len(state["modes"]), len(state["trackers"])
    index, follows = state["tracker_of_mode"], state["tracker_follows"]
    if len(index) != modes or len(state["tracker_configs"]) != trackers or len(follows) != trackers:
        raise ValueError(
            f"the saved Exploration has {modes} modes, {len(index)} tracker indices, {trackers} "
            f"trackers, {len(state['tracker_configs'])} tracker configs and {len(follows)} "
            "followed modes: give one tracker index per mode and one config and mode per tracker"
        )
    if sorted(set(index)) != list(range(trackers)) or not all(0 <= i < modes for i in follows):
        raise ValueError(
            f"the saved Exploration's tracker indices {index} must use each of its {trackers} "
            f"trackers, and its followed modes {follows} must be modes (0..{modes - 1})"
        )


def loaded_modes(
    weights: Sequence[dict[str, torch.Tensor]], template: nn.Module
) -> list[nn.Module]:
    """One eval-mode copy of ``template`` per saved network, holding its weights (``template``
    is untouched). Raises RuntimeError (load_state_dict's, with the mode named) for weights
    that do not fit the template."""
    modes = []
    for i, saved in enumerate(weights):
        mode = copy.deepcopy(template)
        try:
            unwrap(mode).load_state_dict(saved)
        except RuntimeError as error:
            raise RuntimeError(
                f"mode {i} of the saved Exploration does not fit the template network "
                f"({type(unwrap(template)).__name__}): pass a network of the architecture "
                f"explore ran on. {error}"
            ) from error
        modes.append(mode.eval())
    return modes


def rebuilt_trackers(state: dict[str, Any], modes: Sequence[nn.Module]) -> list[WeightTracker]:
    """Every mode's tracker, each distinct one rebuilt on the network it followed with its
    saved step form, start and Kalman constants (a ``step="gradient"`` tracker gets a
    placeholder optimizer at learning rate 0: set ``tracker.optimizer`` before updating it
    again). Raises ValueError (the tracker's, with the tracker named) for a state of another
    network."""
    distinct = []
    for j, (saved, config) in enumerate(
        zip(state["trackers"], state["tracker_configs"], strict=True)
    ):
        mode = modes[state["tracker_follows"][j]]
        try:
            distinct.append(_tracker(mode, saved, config))
        except ValueError as error:
            raise ValueError(f"tracker {j} of the saved Exploration: {error}") from error
    return [distinct[j] for j in state["tracker_of_mode"]]


def _tracker(mode: nn.Module, saved: dict[str, Any], config: dict[str, float]) -> WeightTracker:
    """A tracker of ``mode``'s parameters named in ``saved``, loaded with ``saved``."""
    names = set(saved["names"])
    gradient = saved["step_form"] == "gradient"
    tracker = WeightTracker(
        mode,
        step=saved["step_form"],
        optimizer=torch.optim.SGD(mode.parameters(), lr=0.0) if gradient else None,
        config=KalmanConfig(**config),
        init_mean="weights" if saved["mean"] is None else "zero",  # the floor, or a stored mean
        param_filter=lambda name, module, param: name in names,
    )
    tracker.load_state_dict(saved)
    return tracker
