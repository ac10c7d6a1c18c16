"""Saving and loading posteriors: plain dicts of tensors, numbers and strings.

Every posterior's `state_dict()` loads back under `torch.load(..., weights_only=True)`, so a
chosen ensemble can be shipped without pickled code (issue 10).
"""

from __future__ import annotations

from typing import Any, ClassVar


class StatefulPosterior:
    """`state_dict`/`load_state_dict` from the attributes named in ``state_fields``.

    Subclasses set ``kind`` (the tag saved with the state) and ``state_fields``; loading replaces
    those attributes, so a loaded posterior samples exactly as the saved one did.
    """

    kind: ClassVar[str]
    state_fields: ClassVar[tuple[str, ...]]

    def state_dict(self) -> dict[str, Any]:
        """{"kind": kind, field: value, ...}; tensors are the posterior's own (not copies)."""
        return {"kind": self.kind, **{name: getattr(self, name) for name in self.state_fields}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the state of a posterior of the same kind.

        Raises:
            ValueError: the state is of another kind or misses a field.
        """
        if state.get("kind") != self.kind:
            raise ValueError(
                f"cannot load a {state.get('kind')!r} posterior state into {type(self).__name__}"
            )
        missing = [name for name in self.state_fields if name not in state]
        if missing:
            raise ValueError(f"{self.kind} posterior state misses {missing}")
        for name in self.state_fields:
            setattr(self, name, state[name])


def load_posterior(state: dict[str, Any]) -> StatefulPosterior:
    """The posterior saved in `state` (any `StatefulPosterior` subclass, found by its kind).

    Raises:
        ValueError: no posterior class has that kind.
    """
    kinds = {cls.kind: cls for cls in _subclasses(StatefulPosterior)}
    cls = kinds.get(state.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown posterior kind {state.get('kind')!r}; known: {sorted(kinds)}")
    posterior = cls.__new__(cls)
    posterior.load_state_dict(state)
    return posterior


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
