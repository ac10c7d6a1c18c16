"""Every parameterised layer type of torch.nn through the tracker, both posteriors and the ensemble.

For each layer in its common configurations: one tracker step equals an independent float64
NumPy evaluation of TRADI.md section 2 (normalisation layers untracked by default), and a
scale-0 ensemble (diag and kernel posteriors) reproduces the network's output, evaluated in a
loop and under vmap (with the loop as fallback where vmap cannot trace the layer).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

import tradi.inference.ensemble
from tradi import KalmanConfig, ModelIO, SampledEnsemble, WeightTracker
from tradi.plumbing.adapters import DEFAULT_IO, as_arguments

# vmap's per-sample fallback for ops without a batching rule is slow, not wrong
pytestmark = [
    pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning"),
    pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning"),
]
N = 3  # batch size
FIRST = ModelIO(output_fn=lambda out: out[0])  # layers returning (output, state) tuples


@dataclass
class Case:
    model: nn.Module
    inputs: Any
    io: ModelIO = DEFAULT_IO


def _x(*shape: int) -> Tensor:
    return torch.randn(N, *shape)


def _tokens(length: int = 5, vocabulary: int = 11) -> Tensor:
    return torch.randint(0, vocabulary, (N, length))


class _LogProb(nn.Module):
    """AdaptiveLogSoftmaxWithLoss predicts through log_prob (its forward needs targets)."""

    def __init__(self, in_features: int = 8, div_value: float = 2.0) -> None:
        super().__init__()
        self.head = nn.AdaptiveLogSoftmaxWithLoss(in_features, 10, [4, 8], div_value=div_value)

    def forward(self, x: Tensor) -> Tensor:
        return self.head.log_prob(x)


class _Symmetric(nn.Module):
    """A user-defined parametrization (torch.nn.utils.parametrize)."""

    def forward(self, weight: Tensor) -> Tensor:
        return weight.triu() + weight.triu(1).transpose(0, 1)


def _symmetric() -> nn.Module:
    layer = nn.Linear(4, 4)
    parametrize.register_parametrization(layer, "weight", _Symmetric())
    return layer


def _orthogonal() -> nn.Module:
    return parametrizations.orthogonal(nn.Linear(5, 5))


def _old_weight_norm() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated, still used in the wild
        return torch.nn.utils.weight_norm(nn.Linear(4, 3))


def _lazy(layer: nn.Module, x: Tensor) -> Case:
    layer(x)  # the dry run that initialises a lazy layer
    return Case(layer, x)


CASES: dict[str, Callable[[], Case]] = {
    "Linear": lambda: Case(nn.Linear(4, 3), _x(4)),
    "Linear-nobias": lambda: Case(nn.Linear(4, 3, bias=False), _x(4)),
    "Linear-3d-input": lambda: Case(nn.Linear(4, 3), _x(2, 4)),
    "Bilinear": lambda: Case(nn.Bilinear(4, 5, 3), (_x(4), _x(5))),
    "LazyLinear": lambda: _lazy(nn.LazyLinear(3), _x(4)),
    "Conv1d": lambda: Case(nn.Conv1d(2, 3, 3, padding=1), _x(2, 7)),
    "Conv2d": lambda: Case(nn.Conv2d(2, 3, 3, padding=1), _x(2, 6, 6)),
    "Conv2d-groups-stride-nobias": lambda: Case(
        nn.Conv2d(4, 4, 3, stride=2, groups=2, bias=False), _x(4, 7, 7)
    ),
    "Conv2d-depthwise-dilated": lambda: Case(nn.Conv2d(3, 6, 3, groups=3, dilation=2), _x(3, 8, 8)),
    "Conv3d": lambda: Case(nn.Conv3d(2, 3, 2), _x(2, 4, 4, 4)),
    "LazyConv2d": lambda: _lazy(nn.LazyConv2d(3, 3), _x(2, 5, 5)),
    "ConvTranspose1d": lambda: Case(nn.ConvTranspose1d(2, 3, 3, stride=2), _x(2, 5)),
    "ConvTranspose2d": lambda: Case(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1), _x(2, 4, 4)),
    "ConvTranspose3d": lambda: Case(nn.ConvTranspose3d(2, 3, 2), _x(2, 3, 3, 3)),
    "LazyConvTranspose1d": lambda: _lazy(nn.LazyConvTranspose1d(3, 3), _x(2, 5)),
    "Embedding": lambda: Case(nn.Embedding(11, 4), _tokens()),
    "Embedding-padding": lambda: Case(nn.Embedding(11, 4, padding_idx=0), _tokens()),
    "Embedding-sparse": lambda: Case(nn.Embedding(11, 4, sparse=True), _tokens()),
    "EmbeddingBag-mean": lambda: Case(nn.EmbeddingBag(11, 4, mode="mean"), _tokens()),
    "EmbeddingBag-sum": lambda: Case(nn.EmbeddingBag(11, 4, mode="sum"), _tokens()),
    "RNN-tanh-2layers": lambda: Case(nn.RNN(3, 4, num_layers=2, batch_first=True), _x(5, 3), FIRST),
    "RNN-relu": lambda: Case(nn.RNN(3, 4, nonlinearity="relu", batch_first=True), _x(5, 3), FIRST),
    "LSTM": lambda: Case(nn.LSTM(3, 4, batch_first=True), _x(5, 3), FIRST),
    "LSTM-bidirectional-proj": lambda: Case(
        nn.LSTM(3, 4, bidirectional=True, proj_size=2, batch_first=True), _x(5, 3), FIRST
    ),
    "LSTM-seq-first-nobias": lambda: Case(nn.LSTM(3, 4, bias=False), _x(5, 3), FIRST),
    "GRU-2layers": lambda: Case(nn.GRU(3, 4, num_layers=2, batch_first=True), _x(5, 3), FIRST),
    "RNNCell": lambda: Case(nn.RNNCell(3, 4), _x(3)),
    "LSTMCell": lambda: Case(nn.LSTMCell(3, 4), _x(3), FIRST),
    "GRUCell": lambda: Case(nn.GRUCell(3, 4), _x(3)),
    "MultiheadAttention": lambda: Case(
        nn.MultiheadAttention(8, 2, batch_first=True), (_x(5, 8),) * 3, FIRST
    ),
    "MultiheadAttention-kdim-vdim-bias_kv": lambda: Case(
        nn.MultiheadAttention(8, 2, kdim=6, vdim=5, add_bias_kv=True, batch_first=True),
        (_x(4, 8), _x(5, 6), _x(5, 5)),
        FIRST,
    ),
    "TransformerEncoderLayer": lambda: Case(
        nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True), _x(5, 8)
    ),
    "TransformerEncoderLayer-norm-first-gelu": lambda: Case(
        nn.TransformerEncoderLayer(
            8, 2, dim_feedforward=16, activation="gelu", norm_first=True, batch_first=True
        ),
        _x(5, 8),
    ),
    "TransformerDecoderLayer": lambda: Case(
        nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True),
        (_x(4, 8), _x(5, 8)),
    ),
    "Transformer": lambda: Case(
        nn.Transformer(8, 2, 1, 1, dim_feedforward=16, batch_first=True), (_x(5, 8), _x(4, 8))
    ),
    "PReLU-shared": lambda: Case(nn.Sequential(nn.Linear(4, 3), nn.PReLU()), _x(4)),
    "PReLU-per-channel": lambda: Case(nn.Sequential(nn.Conv1d(2, 3, 1), nn.PReLU(3)), _x(2, 5)),
    "BatchNorm1d": lambda: Case(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), _x(4)),
    "BatchNorm2d": lambda: Case(nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)), _x(2, 4, 4)),
    "BatchNorm3d": lambda: Case(
        nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3)), _x(2, 3, 3, 3)
    ),
    "LazyBatchNorm1d": lambda: _lazy(nn.Sequential(nn.Linear(4, 3), nn.LazyBatchNorm1d()), _x(4)),
    "LayerNorm": lambda: Case(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)), _x(4)),
    "GroupNorm": lambda: Case(nn.Sequential(nn.Conv1d(2, 4, 1), nn.GroupNorm(2, 4)), _x(2, 5)),
    "InstanceNorm2d-affine": lambda: Case(
        nn.Sequential(nn.Conv2d(2, 3, 1), nn.InstanceNorm2d(3, affine=True)), _x(2, 4, 4)
    ),
    "RMSNorm": lambda: Case(nn.Sequential(nn.Linear(4, 3), nn.RMSNorm(3)), _x(4)),
    "weight_norm": lambda: Case(parametrizations.weight_norm(nn.Linear(4, 3)), _x(4)),
    "spectral_norm": lambda: Case(parametrizations.spectral_norm(nn.Conv2d(2, 3, 3)), _x(2, 5, 5)),
    "orthogonal": lambda: Case(_orthogonal(), _x(5)),
    "parametrize-custom": lambda: Case(_symmetric(), _x(4)),
    "weight_norm-hooks": lambda: Case(_old_weight_norm(), _x(4)),
    "AdaptiveLogSoftmaxWithLoss": lambda: Case(_LogProb(), _x(8)),
    # 6 // 4**2 = 0: a tail projection with a zero-size weight
    "AdaptiveLogSoftmaxWithLoss-empty-tail": lambda: Case(_LogProb(6, 4.0), _x(6)),
}
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _build(name: str) -> Case:
    torch.manual_seed(0)
    case = CASES[name]()
    case.model.eval()
    return case


def _expected_tracked(model: nn.Module) -> set[str]:
    """Every distinct parameter except those of normalisation layers (the default filter)."""
    norm = {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if isinstance(module, _NORMS)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    return {name for name, _ in model.named_parameters()} - norm


def _output(case: Case) -> Tensor:
    args, kwargs = as_arguments(case.inputs)
    with torch.no_grad():
        return case.io.logits(case.model(*args, **kwargs))


def _reference_step(w0: np.ndarray, w1: np.ndarray, shape0: int) -> tuple[np.ndarray, np.ndarray]:
    """mu, sigma2 after one step from mu(0) = 0, sigma2(0) = sqrt(2 / size(0)), P(0) = 0."""
    config = KalmanConfig()
    k_mean = config.q_mean / (config.q_mean + config.r_mean)
    k_var = config.q_var / (config.q_var + config.r_var)
    d = w1 - w0
    mu = (1 - k_mean) * (0.0 + d) + k_mean * w1
    var = (1 - k_var) * (np.sqrt(2.0 / max(shape0, 1)) + d**2) + k_var * (w1 - mu) ** 2
    return mu, var


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_tracker_step_matches_numpy(name: str) -> None:
    case = _build(name)
    # the public code's start: the reference's mu(0) = 0 and sigma2(0) = sqrt(2 / size(0))
    tracker = WeightTracker(case.model, init_mean="zero", init_variance="public_code")
    params = dict(case.model.named_parameters())
    assert set(tracker.names) == _expected_tracked(case.model)
    assert tracker.num_tracked == sum(params[n].numel() for n in tracker.names)
    before = {n: params[n].detach().double().numpy().copy() for n in tracker.names}
    with torch.no_grad():
        for param in case.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    assert tracker.update()
    mean, variance = tracker.mean(), tracker.variance()
    for n in tracker.names:
        w1 = params[n].detach().double().numpy()
        mu, var = _reference_step(before[n], w1, w1.shape[0] if w1.ndim else 1)
        np.testing.assert_allclose(mean[n].numpy(), mu, rtol=1e-5, atol=1e-7, err_msg=n)
        np.testing.assert_allclose(variance[n].numpy(), var, rtol=1e-5, atol=1e-7, err_msg=n)


@pytest.mark.parametrize("batching", ["loop", "vmap-or-loop"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_scale_zero_ensemble_is_the_network(
    name: str, batching: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _build(name)
    tracker = WeightTracker(case.model, init_mean="weights", init_variance=1e-4)
    with torch.no_grad():
        for param in case.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    tracker.update()
    expected = _output(case)
    if batching == "vmap-or-loop":  # on the CPU "auto" would take the loop without trying vmap
        monkeypatch.setattr(tradi.inference.ensemble, "_prefers_loop", lambda device: False)
    for covariance in ("diag", "kernel"):
        posterior = tracker.posterior(covariance, scale=0.0)
        mode = "loop" if batching == "loop" else "auto"
        ens = SampledEnsemble(case.model, posterior, 2, batching=mode, io=case.io)
        outputs = ens.sample_logits(case.inputs)
        for output in outputs:
            torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
        noisy = SampledEnsemble(case.model, tracker.posterior(covariance), 2, io=case.io)
        first, second = noisy.sample_logits(case.inputs)
        assert torch.isfinite(first).all() and not torch.equal(first, second)
