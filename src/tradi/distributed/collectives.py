"""Exact reductions across ranks for evaluation.

Metrics that are means or sort-based (AUROC, FPR95) are not the mean of per-rank values. Two
exact routes: gather the predictions (`all_gather_tensors`) and compute once, or reduce sums
and counts (`all_reduce_sums`) and divide once. The accumulating metrics of `tradi.metrics`
(torchmetrics Metrics with sum states) take the second route by themselves in `compute()`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from tradi.distributed.context import world_size


def all_gather_tensors(tensor: Tensor, dim: int = 0) -> Tensor:
    """Every rank's `tensor` concatenated along `dim` in rank order, on every rank.

    Sizes along `dim` may differ between ranks (the blocks of `shard_dataset`); the other
    dimensions and the dtype must agree. With contiguous shards the result is in dataset order.
    The result is on `tensor`'s device (NCCL moves CPU tensors through this rank's GPU).
    """
    if world_size() == 1:
        return tensor
    dim = dim % tensor.dim()
    local = tensor.to(_communication_device(tensor)).contiguous()
    size = torch.tensor([local.shape[dim]], device=local.device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(sizes))
    padding = list(local.shape)
    padding[dim] = longest - local.shape[dim]
    padded = torch.cat([local, local.new_zeros(padding)], dim=dim)
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    blocks = [g.narrow(dim, 0, int(n)) for g, n in zip(gathered, sizes, strict=True)]
    return torch.cat(blocks, dim).to(tensor.device)


def all_reduce_sums(sums: Mapping[str, float | Tensor]) -> dict[str, float]:
    """Sum each named scalar over the ranks, in float64: e.g. {"loss_sum", "correct", "count"}
    before one division, which gives the mean over all ranks' samples exactly."""
    names = list(sums)
    local = torch.tensor([float(sums[name]) for name in names], dtype=torch.float64)
    if world_size() > 1:
        local = local.to(_communication_device(local))
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
    return {name: float(value) for name, value in zip(names, local.cpu(), strict=True)}


def _communication_device(tensor: Tensor) -> torch.device:
    """This rank's GPU under NCCL (which cannot send CPU tensors), the tensor's device otherwise."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device
