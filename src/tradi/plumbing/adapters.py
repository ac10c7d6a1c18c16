"""`ModelIO`: how a batch becomes the model's inputs and targets, and which output is the prediction.

One object, passed as ``io=`` to `SampledEnsemble`, `update_bn_stats`, `tradi.training.fit`
and every method (`build_method(..., io=...)`), so BatchNorm re-estimation, training,
validation and prediction read batches and outputs the same way.

Model inputs are a tensor (one positional argument), a tuple or list (positional arguments) or
a dict (keyword arguments); anything else is passed as the one positional argument.

Defaults, used when a function is not given:

| what | handled by default | otherwise |
|---|---|---|
| inputs of a batch | a tensor; ``(inputs,)``; ``(inputs, targets)``; a dict, namedtuple or dataclass with exactly one of the fields ``input``, ``inputs``, ``x`` | ``inputs_fn`` |
| targets of a batch | ``(inputs, targets)``; a dict, namedtuple or dataclass with exactly one of ``target``, ``targets``, ``y``, ``label``, ``labels`` | ``targets_fn`` |
| logits (classification) | a tensor; a dict, namedtuple, dataclass or Hugging Face output with ``logits`` | ``output_fn`` |
| regression output | a tensor (the mean); a pair of same-shaped tensors ``(mean, variance)`` | ``output_fn`` |

A structure the defaults do not handle raises a `TypeError` naming the function to pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call
from torch.utils._pytree import tree_map_only

_INPUT_KEYS = ("input", "inputs", "x")
_TARGET_KEYS = ("target", "targets", "y", "label", "labels")
_OUTPUT_EXAMPLE = "io=tradi.ModelIO(output_fn=lambda out: out[0]) if out[0] are the logits"


def _example(fn: str, value: Any) -> str:
    """A correct `ModelIO` call for the structure seen (batch or output)."""
    if fn == "output_fn":
        return _OUTPUT_EXAMPLE
    if isinstance(value, Mapping):
        return (
            'io=tradi.ModelIO(inputs_fn=lambda batch: batch["<input key>"], '
            'targets_fn=lambda batch: batch["<target key>"])'
        )
    if isinstance(value, (tuple, list)):
        return (
            "io=tradi.ModelIO(inputs_fn=lambda batch: batch[0], "
            "targets_fn=lambda batch: batch[1]) for batches (inputs, targets, ...)"
        )
    return (
        "io=tradi.ModelIO(inputs_fn=lambda batch: batch.<inputs>, "
        "targets_fn=lambda batch: batch.<targets>)"
    )


def _unhandled(what: str, value: Any, fn: str) -> TypeError:
    size = f" of {len(value)} items" if isinstance(value, (tuple, list, Mapping)) else ""
    keys = f" (keys {sorted(map(str, value))})" if isinstance(value, Mapping) else ""
    return TypeError(
        f"tradi cannot tell the {what} in a {type(value).__name__}{size}{keys}: pass "
        f"io=tradi.ModelIO({fn}=...) saying how, e.g. {_example(fn, value)}"
    )


def _fields(value: Any) -> Mapping[str, Any] | None:
    """The named fields of a dict, namedtuple or dataclass instance (None for anything else)."""
    if isinstance(value, Mapping):  # Hugging Face ModelOutput is an OrderedDict
        return value
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return value._asdict()  # type: ignore[no-any-return]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def _by_key(value: Any, keys: tuple[str, ...]) -> Any:
    """The one field of `value` named by one of `keys` (None if none or several)."""
    fields = _fields(value)
    found = [key for key in keys if fields is not None and key in fields]
    return fields[found[0]] if fields is not None and len(found) == 1 else None


def default_inputs(batch: Any) -> Any:
    """The model inputs of a batch by the defaults in the module docstring (TypeError if none)."""
    if isinstance(batch, Tensor):
        return batch
    if type(batch) in (tuple, list) and len(batch) in (1, 2):
        return batch[0]
    if _by_key(batch, _INPUT_KEYS) is not None:
        return _by_key(batch, _INPUT_KEYS)
    raise _unhandled("model inputs", batch, "inputs_fn")


def default_targets(batch: Any) -> Any:
    """The targets of a batch by the defaults in the module docstring (TypeError if none)."""
    if type(batch) in (tuple, list) and len(batch) == 2:
        return batch[1]
    if _by_key(batch, _TARGET_KEYS) is not None:
        return _by_key(batch, _TARGET_KEYS)
    raise _unhandled("targets", batch, "targets_fn")


def default_logits(output: Any) -> Any:
    """The logits in a model output by the defaults in the module docstring."""
    if isinstance(output, Tensor):
        return output
    if _by_key(output, ("logits",)) is not None:
        return _by_key(output, ("logits",))
    raise _unhandled("logits", output, "output_fn")


def as_arguments(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Model inputs as (positional, keyword) arguments: tuple/list -> args, dict -> kwargs."""
    if type(inputs) in (tuple, list):
        return tuple(inputs), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    return (inputs,), {}


def to_device(value: Any, device: torch.device | str) -> Any:
    """`value` with every tensor in it (nested tuples, lists, dicts, namedtuples) on `device`."""
    return tree_map_only(Tensor, lambda t: t.to(device), value)


@dataclass(frozen=True)
class ModelIO:
    """How batches and outputs are read (defaults and errors: see the module docstring).

    Args:
        inputs_fn: ``batch -> inputs``: a tensor, a tuple/list of positional arguments or a
            dict of keyword arguments for the model.
        targets_fn: ``batch -> targets`` tensor (used where targets are needed: training,
            validation, choosing a noise scale).
        output_fn: ``model output -> prediction``: the logits tensor [N, C, ...] for
            classification; for regression the mean [N, ...] or a pair ``(mean, variance)``.
    """

    inputs_fn: Callable[[Any], Any] | None = None
    targets_fn: Callable[[Any], Any] | None = None
    output_fn: Callable[[Any], Any] | None = None

    def inputs(self, batch: Any) -> Any:
        """The model inputs of `batch`."""
        return (self.inputs_fn or default_inputs)(batch)

    def targets(self, batch: Any) -> Tensor:
        """The targets of `batch`."""
        targets = (self.targets_fn or default_targets)(batch)
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets_fn must return a tensor, got {type(targets).__name__}")
        return targets

    def logits(self, output: Any) -> Tensor:
        """The logits in a model output (classification)."""
        logits = (self.output_fn or default_logits)(output)
        if not isinstance(logits, Tensor):
            raise TypeError(f"output_fn must return the logits tensor, got {type(logits).__name__}")
        return logits

    def regression(self, output: Any) -> tuple[Tensor, Tensor | None]:
        """(mean, variance or None) of a regression model's output.

        Raises:
            TypeError: the output (after ``output_fn``) is neither a tensor nor a pair of
                same-shaped tensors.
        """
        value = output if self.output_fn is None else self.output_fn(output)
        if isinstance(value, Tensor):
            return value, None
        if (
            type(value) in (tuple, list)
            and len(value) == 2
            and all(isinstance(v, Tensor) for v in value)
            and value[0].shape == value[1].shape
        ):
            return value[0], value[1]
        raise _unhandled("regression mean and variance", value, "output_fn")

    def forward(self, model: Callable[..., Any], inputs: Any) -> Any:
        """``model`` called on `inputs` (see `as_arguments`)."""
        args, kwargs = as_arguments(inputs)
        return model(*args, **kwargs)

    def functional_forward(
        self, model: Any, tensors: dict[str, Tensor], inputs: Any, *, tie_weights: bool = True
    ) -> Any:
        """``model`` evaluated with `tensors` in place of its own (`torch.func.functional_call`;
        tied parameters take the value given under any of their names). ``tie_weights=False``
        skips looking for ties (~2 ms a call on ENet): only for a model that has none."""
        args, kwargs = as_arguments(inputs)
        return functional_call(model, tensors, args, kwargs, tie_weights=tie_weights)


#: The defaults of every function (module docstring).
DEFAULT_IO = ModelIO()
