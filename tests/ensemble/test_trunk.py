"""sample_modules: the trunk evaluated once gives exactly what full evaluation gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tradi import DiagonalGaussian, SampledEnsemble, WeightTracker
from tradi.models import build_model
from tradi.posterior import WeightPosterior


class Only:
    """The posterior's marginal on some parameters: the reference full evaluation samples."""

    def __init__(self, posterior: WeightPosterior, prefixes: tuple[str, ...]) -> None:
        self.posterior, self.prefixes = posterior, prefixes

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        drawn = self.posterior.sample(generator)
        return {n: w for n, w in drawn.items() if n.startswith(self.prefixes)}


class Counting(nn.Module):
    """A trunk module that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 8)
        self.calls = 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        return self.linear(x), x.mean(1, keepdim=True)


class Branchy(nn.Module):
    """Not a Sequential: a tuple-returning trunk module, a ReLU module reused before and after
    the sampled head, functional code between modules, and a skip input to the head's output."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = Counting()
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        h, m = self.trunk(x)
        h = self.act(h) * 2.0 + m
        return self.out(self.act(self.head(h))) + m


def _posterior(model: nn.Module) -> DiagonalGaussian:
    tracker = WeightTracker(model, init_mean="weights", init_variance=0.05)
    return tracker.posterior("diag")


@pytest.mark.parametrize(
    ("name", "shape", "head"),
    [("mlp", (1, 28, 28), "layers.8"), ("lenet5", (1, 28, 28), "classifier.7")],
)
def test_last_layers_equal_full_evaluation_exactly(name: str, shape: tuple, head: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_shape=shape).eval()
    posterior = _posterior(model)
    x = torch.randn(7, *shape)
    cheap = SampledEnsemble(model, posterior, 4, sample_modules=[head], batching="loop")
    full = SampledEnsemble(model, Only(posterior, (head + ".",)), 4, batching="loop")
    logits = cheap.sample_logits(x)
    assert torch.equal(logits, full.sample_logits(x))
    assert logits.std(0).mean() > 1e-3  # the samples differ: the head really is sampled


def test_any_module_structure_and_the_trunk_runs_once() -> None:
    torch.manual_seed(0)
    model = Branchy().eval()
    posterior = _posterior(model)
    x = torch.randn(5, 6)
    cheap = SampledEnsemble(model, posterior, 6, sample_modules=["head"], batching="loop")
    full = SampledEnsemble(model, Only(posterior, ("head.",)), 6, batching="loop")
    expected = full.sample_logits(x)
    before = cheap.model.trunk.calls
    assert torch.equal(cheap.sample_logits(x), expected)
    assert cheap.model.trunk.calls - before == 1  # once per input, not once per weight set
    vmapped = SampledEnsemble(model, posterior, 6, sample_modules=["head"], batching="vmap")
    torch.testing.assert_close(vmapped.sample_logits(x), expected)


def test_batchnorm_after_the_trunk_is_re_estimated_per_sample() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)
    )
    model[1].running_mean.normal_()  # trained statistics of the trunk's BatchNorm
    model.eval()
    posterior = _posterior(model)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 4, generator=g),) for _ in range(3)]
    ens = SampledEnsemble(
        model, posterior, 3, sample_modules=["2"], bn_loader=batches, batching="loop"
    )
    assert ens._sets.buffers is not None
    assert set(ens._sets.buffers[0]) == {"3.running_mean", "3.running_var", "3.num_batches_tracked"}
    for index, weights in enumerate(ens._sets.cached or []):
        # the reference: the trunk in eval mode, the sampled Linear, then the cumulative average
        # over batches of each batch's mean and unbiased variance (momentum=None)
        means, variances = [], []
        for (x,) in batches:
            with torch.no_grad():
                h = model[1](model[0](x))
                z = (h @ weights["2.weight"].T + weights["2.bias"]).double().numpy()
            means.append(z.mean(0))
            variances.append(z.var(0, ddof=1))
        buffers = ens._sets.buffers[index]
        np.testing.assert_allclose(buffers["3.running_mean"], np.mean(means, 0), rtol=1e-5)
        np.testing.assert_allclose(buffers["3.running_var"], np.mean(variances, 0), rtol=1e-4)
    # nothing after the head: no BatchNorm to re-estimate, the loader is not read
    last = SampledEnsemble(model, posterior, 3, sample_modules=["4"], bn_loader=batches)
    assert last._sets.buffers is None


def test_fewer_bn_batches_read_only_those() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).eval()
    batches = [(torch.randn(8, 4),) for _ in range(5)]
    few = SampledEnsemble(model, _posterior(model), 2, bn_loader=batches, bn_batches=2)
    two = SampledEnsemble(model, _posterior(model), 2, bn_loader=batches[:2])
    assert few._sets.buffers is not None and two._sets.buffers is not None
    torch.testing.assert_close(few._sets.buffers[1], two._sets.buffers[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="bn_batches"):
        SampledEnsemble(model, _posterior(model), 2, bn_batches=0)


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.head = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(x)
        out = self.head(h)
        h += out  # modifies the trunk's output: replay must notice
        return h


def test_bad_uses_are_refused_with_what_to_do() -> None:
    model = Branchy().eval()
    posterior = _posterior(model)
    with pytest.raises(ValueError, match=r"not modules of Branchy.*'head'"):
        SampledEnsemble(model, posterior, 2, sample_modules=["classifier"])
    with pytest.raises(ValueError, match="hold no parameter"):
        SampledEnsemble(model, posterior, 2, sample_modules=["act"])
    with pytest.raises(ValueError, match="samples no parameter of sample_modules"):
        SampledEnsemble(model, Only(posterior, ("out.",)), 2, sample_modules=["head"])
    model.spare = nn.Linear(2, 2)  # registered, never called by forward
    spare = SampledEnsemble(model, _posterior(model), 2, sample_modules=["spare"])
    with pytest.raises(ValueError, match="never called a sampled module"):
        spare.sample_logits(torch.randn(2, 6))
    inplace = InPlace().eval()
    ens = SampledEnsemble(inplace, _posterior(inplace), 2, sample_modules=["head"])
    with pytest.raises(RuntimeError, match="in place"):
        ens.sample_logits(torch.randn(2, 3))


def test_methods_take_sample_modules_and_check_names_before_training() -> None:
    from tradi.methods import build_method

    def factory() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))

    g = torch.Generator().manual_seed(0)
    loader = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))] * 3
    train = {"epochs": 1, "progress": False}
    wrong = build_method("tradi", factory, train=train, sample_modules=("fc",), scale=1.0)
    with pytest.raises(ValueError, match="not modules of Sequential"):
        wrong.fit(loader)
    assert wrong.model is None  # refused before any training
    method = build_method(
        "tradi", factory, train=train, sample_modules=("3",), n_samples=4, scale=1.0
    )
    method.fit(loader)
    ensemble = method.ensemble()
    assert ensemble.sample_modules == ("3",)
    assert ensemble._sets.cached is not None and set(ensemble._sets.cached[0]) == {
        "3.weight",
        "3.bias",
    }
    assert method.predict(loader).shape == (4, 24, 3)


def test_enet_transposed_conv_head_equals_full_evaluation() -> None:
    """ENet's full-resolution transposed-conv head on the replayed trunk (tuple outputs with
    pooling indices, skip shapes): its logits equal full evaluation, and the streamed average
    equals the mean of the per-sample softmaxes, to float32 rounding."""
    torch.manual_seed(0)
    model = build_model("enet", num_classes=4, input_shape=(3, 32, 48)).eval()
    posterior = _posterior(model)
    x = torch.randn(2, 3, 32, 48)
    cheap = SampledEnsemble(model, posterior, 3, sample_modules=["classifier"])
    full = SampledEnsemble(model, Only(posterior, ("classifier.",)), 3, batching="loop")
    logits = cheap.sample_logits(x)
    scale = full.sample_logits(x).abs().max()
    assert torch.equal(logits, full.sample_logits(x))
    assert logits.std(0).mean() > 1e-3 * scale  # the samples differ
    torch.testing.assert_close(cheap(x), logits.softmax(2).mean(0), rtol=1e-5, atol=1e-6)
