"""Sampling memory (issue 11, item 8): the peak memory one sample, or SWAG's collection, allocates
on top of the posterior's own state, for one 4096 x 1024 float32 weight (16 MiB).

Measured as the peak of the CPU memory allocated and still live during the call, from the torch
profiler's allocation events (`benchmarks.bench_inference.peak_allocated_mib`): tracemalloc does
not see torch's CPU allocator, and an RSS delta is blurred by the allocator's caching and by
pages touched before. The returned sample (16 MiB) is counted in a sample's peak.
Before chunking (issue 11): kernel rank 10 +321 MB, rank 50 +1.6 GB, SWAG rank-20 collector
+780 MB. Goal: a rank-50 kernel sample under 64 MiB.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmarks.bench_inference import peak_allocated_mib
from benchmarks.common import Result
from tradi.posterior import DiagonalGaussian, KernelGaussian, SWAGCollector

SHAPE = (4096, 1024)
SWAG_RANK = 20


def sampling_memory() -> Result:
    g = torch.Generator().manual_seed(0)
    mean = {"w": 0.01 * torch.randn(SHAPE, generator=g)}
    variance = {"w": 1e-4 * torch.rand(SHAPE, generator=g)}
    anchor = {"w": mean["w"].clone()}
    peaks: dict[str, float] = {}
    diagonal = DiagonalGaussian(mean, variance)
    peaks["diagonal_sample"] = peak_allocated_mib(lambda: diagonal.sample(g))
    for rank in (10, 50):
        kernel = KernelGaussian(mean, variance, anchor, rank=rank)
        peaks[f"kernel_rank_{rank}_sample"] = peak_allocated_mib(lambda k=kernel: k.sample(g))
    layer = nn.Linear(SHAPE[1], SHAPE[0], bias=False)
    collector = SWAGCollector(layer, max_rank=SWAG_RANK)

    def collect_all() -> None:  # one more iterate than the rank: the ring wraps
        for _ in range(SWAG_RANK + 1):
            collector.collect()

    peaks[f"swag_rank_{SWAG_RANK}_collect_{SWAG_RANK + 1}_iterates"] = peak_allocated_mib(
        collect_all
    )
    posterior = collector.posterior()
    peaks[f"swag_rank_{SWAG_RANK}_sample"] = peak_allocated_mib(lambda: posterior.sample(g))
    return {
        "tensor": f"{SHAPE[0]} x {SHAPE[1]} float32 (16 MiB)",
        "peak_mib": peaks,
        "swag_collector_state_mib": (SWAG_RANK + 2) * 16,
        "goal": "kernel_rank_50_sample < 64",
    }


BENCHMARKS: dict[str, Callable[[], Result]] = {"sampling_memory": sampling_memory}
