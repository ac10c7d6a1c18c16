"""BatchNorm over the global batch on CPU, where `torch.nn.SyncBatchNorm` has no kernel.

Each rank gathers the layer's input from every rank (the parts of one global batch), normalises
the whole global batch with the layer's own `F.batch_norm` and keeps its rows: the statistics,
the running averages and the output are those of one process on the global batch. The backward
pass sums every rank's gradient of the gathered input and keeps this rank's rows, so after DDP's
gradient average the step is the single-process one. It costs a gather per layer and normalises
W times more rows than each rank needs: meant for the CPU (gloo) runs; on GPU
`SyncBatchNorm` exchanges only the statistics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from tradi.distributed.collectives import all_gather_tensors
from tradi.distributed.context import rank, world_size


class _GatherRows(torch.autograd.Function):
    """Every rank's rows in rank order; the gradient of this rank's rows summed over ranks."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, start: int) -> Tensor:
        ctx.start, ctx.rows = start, local.shape[0]
        return all_gather_tensors(local)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.narrow(0, ctx.start, ctx.rows), None


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm layer whose training statistics are those of the global batch.

    Built by `from_batchnorm` around an existing layer, sharing its parameters and running
    statistics (names unchanged), like `SyncBatchNorm.convert_sync_batchnorm`.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        """The layer it replaces checked the dimensions; any [N, C, ...] input is accepted."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        rows = all_gather_tensors(torch.tensor([input.shape[0]], device=input.device))
        start = int(rows[: rank()].sum())
        everything = _GatherRows.apply(input, start)
        return super().forward(everything).narrow(0, start, input.shape[0])

    @classmethod
    def from_batchnorm(cls, layer: _BatchNorm) -> GlobalBatchNorm:
        converted = cls(
            layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats
        )
        if layer.affine:
            converted.weight, converted.bias = layer.weight, layer.bias
        converted.running_mean = layer.running_mean
        converted.running_var = layer.running_var
        converted.num_batches_tracked = layer.num_batches_tracked
        converted.train(layer.training)
        return converted


def convert_global_batchnorm(model: nn.Module) -> None:
    """Replace, in place, every BatchNorm layer below `model` by a `GlobalBatchNorm` sharing
    its tensors."""
    for name, module in list(model.named_modules()):
        if name and isinstance(module, _BatchNorm):
            model.set_submodule(name, GlobalBatchNorm.from_batchnorm(module))
