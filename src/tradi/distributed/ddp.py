"""Training a network under DistributedDataParallel and getting the plain network back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tradi.distributed.batchnorm import convert_global_batchnorm
from tradi.distributed.context import world_size


@contextmanager
def data_parallel(model: nn.Module) -> Iterator[nn.Module]:
    """Train `model` through the block as `DistributedDataParallel(model)` (the model itself in a
    single process); `model` keeps the trained parameters and is plain again afterwards.

    Its BatchNorm layers normalise by the global batch for the block, as one process would
    (`SyncBatchNorm` on GPU, `GlobalBatchNorm` on CPU, where SyncBatchNorm has no kernel; both
    share the layers' tensors), and are put back after it: prediction and the per-sample
    BatchNorm re-estimation then run without collectives.
    """
    if world_size() == 1:
        yield model
        return
    device = next(model.parameters()).device
    originals = {
        name: module
        for name, module in model.named_modules()
        if name and isinstance(module, nn.modules.batchnorm._BatchNorm)
    }
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        convert_global_batchnorm(model)
    wrapped = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
    try:
        yield wrapped
    finally:
        for name, original in originals.items():
            original.train(model.get_submodule(name).training)
            model.set_submodule(name, original)
