"""How tradi meets a user's model and data: parameter names through wrappers, batches into inputs and targets, loaders' generators."""

from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.structure import evaluation_copy, named_parameters_with_owner, unwrap

__all__ = [
    "DEFAULT_IO",
    "ModelIO",
    "evaluation_copy",
    "named_parameters_with_owner",
    "to_device",
    "unwrap",
]
