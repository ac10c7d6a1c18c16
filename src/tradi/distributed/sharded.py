"""Sharded models (FSDP2, `torch.distributed.fsdp.fully_shard`): parameters are DTensors and
each rank holds one shard of each. The tracker follows the local shards (its state is 1/N of
the model per rank); sampling and prediction need whole tensors, gathered here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from torch import Tensor, nn


def _is_dtensor(tensor: Tensor) -> bool:
    """Whether `tensor` is a DTensor, without importing torch.distributed.tensor (seconds of
    start-up for every `import tradi`): no DTensor exists unless that module was imported."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def local_shard(tensor: Tensor) -> Tensor:
    """The part of a tensor this rank holds: the local shard of a DTensor, else the tensor."""
    return tensor.to_local() if _is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


def is_sharded(params: Sequence[Tensor]) -> bool:
    return any(_is_dtensor(p) for p in params)


def gather_like(params: Mapping[str, Tensor], local: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Whole tensors from local shards laid out like `params` (same names; collective: every
    rank must call it). Values of non-DTensor parameters are returned as they are."""
    from torch.distributed.tensor import DTensor

    full = {}
    for name, value in local.items():
        param = params[name]
        if isinstance(param, DTensor):
            sharded = DTensor.from_local(
                value.to(param.device),
                param.device_mesh,
                param.placements,
                shape=param.shape,
                stride=param.stride(),
            )
            value = sharded.full_tensor()
        full[name] = value
    return full


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state with every sharded tensor gathered whole (collective), to load into a
    plain copy of the network for prediction: `plain.load_state_dict(full_state_dict(model))`."""
    return {
        name: value.full_tensor() if _is_dtensor(value) else value  # type: ignore[attr-defined]
        for name, value in model.state_dict().items()
    }
