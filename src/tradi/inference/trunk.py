"""Cheap ensembles: evaluate a network's unsampled trunk once, and only the sampled part per sample.

When an ensemble samples only some modules (the last layer, a decoder), every module call that
completes before the first sampled module starts, and that holds no sampled parameter, returns
the same output for every weight set. `TrunkCache.record` runs the model once on an input, with
forward hooks, and stops it at the first call of a sampled module (nothing after it is
computed); it keeps the outputs of the outermost such calls. Inside `TrunkCache.replay` each of
those modules returns its kept output instead of computing, so a forward pass, plain or through
`torch.func.functional_call`, recomputes only what the sampled weights change.

This works on any `nn.Module` (not only `nn.Sequential`) whose code follows two usual rules:

- a sampled parameter is read only by the forward of the module that registers it (a parent
  reading ``self.child.weight`` directly would see the trunk's cached result instead);
- a module's output depends only on its inputs and weights (eval mode: no dropout, no state).

The sampled part must not modify a cached trunk output in place (``x += ...`` on the output of
an unsampled module): replay checks the tensors' version counters after each pass and raises a
RuntimeError if that happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves


class _Stop(Exception):
    """Raised by the pre-hook of the first sampled module: the trunk is complete."""


@dataclass
class _Call:
    module: str
    parent: int | None
    done: bool = False
    output: Any = None
    children: list[int] = field(default_factory=list)


@dataclass
class Trunk:
    """The kept trunk outputs of one input.

    ``outputs``: {module name: outputs of its outermost completed calls, in call order};
    ``seen``: names of every module that ran (completed) before the first sampled module.
    """

    outputs: dict[str, list[Any]]
    seen: set[str]
    versions: list[tuple[Tensor, int]]


def sampled_parameter_names(model: nn.Module, modules: Iterable[str]) -> set[str]:
    """The parameter names (as `model.named_parameters` gives them) under the named modules.

    Raises:
        ValueError: a name is not a module of `model` (the message lists the valid names), or
            the chosen modules hold no parameter.
    """
    named = dict(model.named_modules())
    chosen = list(modules)
    valid = [n for n, m in named.items() if n and any(True for _ in m.parameters(recurse=False))]
    unknown = [name for name in chosen if name not in named]
    if unknown:
        raise ValueError(
            f"sample_modules {unknown} are not modules of {type(model).__name__}; modules with "
            f"parameters: {valid}"
        )
    ids = {id(p) for name in chosen for p in named[name].parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    if not names:
        raise ValueError(
            f"sample_modules {chosen} hold no parameter: nothing to sample; modules with "
            f"parameters: {valid}"
        )
    return names


class TrunkCache:
    """Records and replays the trunk of `model` in front of the parameters `sampled`.

    Args:
        model: the network (the ensemble's own copy: replay patches its modules' ``forward``
            for the duration of the ``with`` block only).
        sampled: names of the sampled parameters (from `sampled_parameter_names`).
    """

    def __init__(self, model: nn.Module, sampled: set[str]) -> None:
        ids = {id(p) for n, p in model.named_parameters() if n in sampled}
        self.model = model
        self.modules = dict(model.named_modules())
        #: modules that register a sampled parameter themselves: the trunk ends at their first call
        self.owners = {
            name
            for name, module in self.modules.items()
            if any(id(p) in ids for p in module.parameters(recurse=False))
        }
        #: modules that hold a sampled parameter at any depth: never cached whole
        self.holders = {
            name
            for name, module in self.modules.items()
            if any(id(p) in ids for p in module.parameters())
        }

    @torch.no_grad()
    def record(self, run: Callable[[], Any]) -> Trunk:
        """Call `run` (one forward pass of the model on an input, e.g. ``lambda: model(x)``) up
        to the model's first sampled module and keep the trunk outputs.

        Raises:
            ValueError: the forward pass never calls a sampled module.
        """
        calls: list[_Call] = []
        stack: list[int] = []
        handles = []
        for name, module in self.modules.items():
            handles.append(module.register_forward_pre_hook(self._pre_hook(name, calls, stack)))
            handles.append(module.register_forward_hook(self._post_hook(calls, stack)))
        try:
            run()
        except _Stop:
            pass
        else:
            raise ValueError(
                f"the forward pass never called a sampled module ({sorted(self.owners)}): "
                "sampling them cannot change the output"
            )
        finally:
            for handle in handles:
                handle.remove()
        return self._trunk(calls)

    def _pre_hook(self, name: str, calls: list[_Call], stack: list[int]) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            if name in self.owners:
                raise _Stop
            parent = stack[-1] if stack else None
            calls.append(_Call(name, parent))
            if parent is not None:
                calls[parent].children.append(len(calls) - 1)
            stack.append(len(calls) - 1)

        return hook

    def _post_hook(self, calls: list[_Call], stack: list[int]) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            call = calls[stack.pop()]
            call.done, call.output = True, output
            if call.module not in self.holders:  # nested calls will not run at replay: free them
                for child in call.children:
                    calls[child].output = None

        return hook

    def _trunk(self, calls: list[_Call]) -> Trunk:
        cached = [False] * len(calls)
        inside = [False] * len(calls)  # nested in a cached call: does not run at replay
        outputs: dict[str, list[Any]] = {}
        for index, call in enumerate(calls):
            if call.parent is not None:
                inside[index] = cached[call.parent] or inside[call.parent]
            if inside[index] or not call.done or call.module in self.holders:
                continue
            cached[index] = True
            outputs.setdefault(call.module, []).append(call.output)
        seen = {call.module for call in calls if call.done}
        versions = [(t, t._version) for t in tree_leaves(outputs) if isinstance(t, Tensor)]
        return Trunk(outputs, seen, versions)

    @contextmanager
    def replay(self, trunk: Trunk) -> Iterator[None]:
        """Within the block, every forward pass of the model takes the trunk from `trunk`."""
        counters = dict.fromkeys(trunk.outputs, 0)
        patched = []

        def reset(module: nn.Module, inputs: Any) -> None:
            for name in counters:
                counters[name] = 0

        def check(module: nn.Module, inputs: Any, output: Any) -> None:
            for tensor, version in trunk.versions:
                if tensor._version != version:
                    raise RuntimeError(
                        "the sampled part of the model modified a trunk output in place; "
                        "use out-of-place operations after the last unsampled module, or do "
                        "not set sample_modules"
                    )

        for name, kept in trunk.outputs.items():
            module = self.modules[name]
            patched.append((module, module.__dict__.get("forward")))
            module.forward = self._replaying(name, kept, module.forward, counters)  # type: ignore[method-assign]
        handles = [
            self.model.register_forward_pre_hook(reset),
            self.model.register_forward_hook(check),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for module, own in patched:  # a forward set on the instance before is put back
                if own is None:
                    del module.forward
                else:
                    module.forward = own

    @staticmethod
    def _replaying(
        name: str, kept: list[Any], original: Callable[..., Any], counters: dict[str, int]
    ) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            index = counters[name]
            counters[name] = index + 1
            return kept[index] if index < len(kept) else original(*args, **kwargs)

        return forward
