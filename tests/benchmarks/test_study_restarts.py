"""benchmarks/study_restarts.py (docs/one-run.md, diverse restarts): the restart's perturbation
w0 = w + k * sigma_tracked * eps has the stated standard deviation and touches nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tradi.posterior.gaussian import DiagonalGaussian

ROOT = Path(__file__).resolve().parents[2]


class _Tracker:
    """A tracker stub: the tracked diagonal Gaussian of ``weight`` alone, std ``sigma``."""

    def __init__(self, model: nn.Linear, sigma: torch.Tensor) -> None:
        self.mean = {"weight": model.weight.detach().clone()}
        self.variance = {"weight": sigma**2}

    def posterior(self, covariance: str, *, scale: float) -> DiagonalGaussian:
        assert covariance == "diag"
        return DiagonalGaussian(self.mean, self.variance, scale=scale)


@pytest.mark.parametrize("k", [1.0, 10.0])
def test_the_restart_is_k_tracked_sigmas_on_the_tracked_weights(
    k: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.study_restarts import _perturbed

    torch.manual_seed(0)
    model = nn.Linear(100, 40)  # 4000 tracked weights; the bias is not tracked
    sigma = torch.rand(40, 100) * 0.1 + 0.01
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = _perturbed(model, _Tracker(model, sigma), k, torch.Generator().manual_seed(3))
    z = (start.weight.detach() - before["weight"]) / (k * sigma)
    # eps ~ N(0, 1) over 4000 draws: mean within 5 / sqrt(4000) = 0.08 of 0, std within
    # 5 / sqrt(2 * 4000) = 0.056 of 1 (5 standard errors; the generator is seeded)
    assert abs(z.mean().item()) < 0.08
    assert abs(z.std().item() - 1.0) < 0.056
    torch.testing.assert_close(start.bias, before["bias"], rtol=0, atol=0)
    for name, param in model.named_parameters():  # the model itself is untouched
        torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)
