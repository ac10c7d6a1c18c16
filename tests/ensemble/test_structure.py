"""Tied parameters and wrapped models (issue 11, items 1-2) through the public API.

Each shared tensor is tracked, collected and sampled once, under `named_parameters()`'s name,
and the tie holds in every sampled network; every wrapper is looked through and states move
between a wrapped and a plain model; unsupported wrappers name the fix.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

from tradi import DiagonalGaussian, SampledEnsemble, WeightTracker
from tradi.methods import build_method
from tradi.plumbing.structure import evaluation_copy, named_parameters_with_owner, unwrap
from tradi.posterior.swag import SWAGCollector

TRAIN = {"epochs": 2, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 0}


class TiedLM(nn.Module):
    """The issue's case: an output layer sharing the embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.out(self.emb(tokens))


class SharedBranches(nn.Module):
    """Ties across unrelated modules: one Linear used twice, and a weight shared by two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.again = self.first  # the same module under two names
        self.conv_a = nn.Conv1d(3, 3, 1)
        self.conv_b = nn.Conv1d(3, 3, 1)
        self.conv_b.weight = self.conv_a.weight
        self.head = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.again(torch.relu(self.first(x)))
        x = self.conv_b(self.conv_a(x.unsqueeze(-1))).squeeze(-1)
        return self.head(x)


class Wrapper(nn.Module):
    """A user's own wrapper: holds the network as `.module` and nothing else."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: object) -> Tensor:
        return self.module(*args)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))


def token_loader(n: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(tokens, (tokens + 1) % 10), batch_size=16)


class FixedPosterior:
    """Always draws the same weight set: lets a test know exactly what each sample uses."""

    def __init__(self, weights: dict[str, Tensor]) -> None:
        self.weights = weights

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return dict(self.weights)


# ---------------------------------------------------------------------------- tied parameters
def test_tied_tensor_is_tracked_once_under_its_first_name() -> None:
    model = TiedLM()
    tracker = WeightTracker(model)
    assert tracker.names == ["emb.weight"] == [n for n, _ in model.named_parameters()]
    assert tracker.num_tracked == 40
    shared = SharedBranches()
    names = [n for n, _, _ in named_parameters_with_owner(shared)]
    assert names == [n for n, _ in shared.named_parameters()]
    assert WeightTracker(shared).num_tracked == sum(p.numel() for p in shared.parameters())


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_the_tie_holds_in_every_sampled_network(batching: str) -> None:
    model, tokens = TiedLM(), torch.arange(10)
    shared = torch.randn(10, 4)
    ens = SampledEnsemble(model, FixedPosterior({"emb.weight": shared}), 2, batching=batching)
    # out.weight is emb.weight in the sampled network too: logits = W[t] @ W^T
    torch.testing.assert_close(ens.sample_logits(tokens)[1], shared[tokens] @ shared.T)
    tracker = WeightTracker(model, init_variance=1.0)
    tracker.update()
    for covariance in ("diag", "kernel"):
        ens = SampledEnsemble(model, tracker.posterior(covariance), 3, batching=batching)
        assert ens(tokens).shape == (10, 10)


def test_swag_collects_a_tied_tensor_once() -> None:
    model = TiedLM()
    collector = SWAGCollector(model, max_rank=2)
    for _ in range(3):
        with torch.no_grad():
            model.emb.weight.add_(0.1)
        collector.collect()
    assert collector.names == ["emb.weight"]
    torch.testing.assert_close(collector.mean()["emb.weight"], model.emb.weight - 0.1)
    assert SampledEnsemble(model, collector.posterior(), 2)(torch.arange(5)).shape == (5, 10)


@pytest.mark.parametrize("name", ["tradi", "swag", "gaussian_perturbation"])
def test_methods_train_and_predict_on_a_tied_model(name: str) -> None:
    extra = {"scale": 0.01} if name == "gaussian_perturbation" else {"scale": 1.0}
    method = build_method(name, TiedLM, train=TRAIN, n_samples=2, **extra)
    method.fit(token_loader())
    probs = method.predict(token_loader(16, seed=1))
    assert probs.shape == (2, 16, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 16))
    assert method.model.out.weight is method.model.emb.weight


# ---------------------------------------------------------------------------- wrappers
def _wrappers(model: nn.Module) -> dict[str, nn.Module]:
    compiled_inside = copy.deepcopy(model)
    compiled_inside[0] = torch.compile(compiled_inside[0], backend="eager")
    return {
        "compile": torch.compile(model, backend="eager"),
        "DataParallel": nn.DataParallel(model),
        "AveragedModel": AveragedModel(model),
        "user wrapper": Wrapper(model),
        "nested": nn.DataParallel(Wrapper(torch.compile(model, backend="eager"))),
        "compiled submodule": compiled_inside,
    }


@pytest.mark.parametrize("kind", list(_wrappers(nn.Sequential(nn.Linear(1, 1)))))
def test_every_wrapper_is_looked_through(kind: str) -> None:
    plain = mlp()
    wrapped = _wrappers(plain)[kind]
    names = [n for n, _ in plain.named_parameters()]
    assert [n for n, _, _ in named_parameters_with_owner(wrapped)] == names
    assert [n for n, _, _ in named_parameters_with_owner(evaluation_copy(wrapped))] == names
    tracker = WeightTracker(wrapped, init_mean="weights", init_variance=1e-3)
    with torch.no_grad():
        for param in wrapped.parameters():
            param.add_(0.01)
    tracker.update()
    # the state moves to a tracker of the plain model and back
    again = WeightTracker(plain if kind != "AveragedModel" else wrapped.module)
    again.load_state_dict(tracker.state_dict())
    torch.testing.assert_close(again.mean(), tracker.mean())
    tracker.load_state_dict(again.state_dict())
    # ensembles on the wrapped and on the plain network agree; scale 0 gives the network
    x = torch.randn(5, 3)
    with torch.no_grad():
        reference = wrapped.eval()(x)
    for model in (wrapped, unwrap(wrapped)):
        ens = SampledEnsemble(model, tracker.posterior(scale=0.0), 2, batching="loop")
        torch.testing.assert_close(ens.sample_logits(x)[0], reference)


def test_a_user_wrapper_keeps_its_forward() -> None:
    class Doubling(Wrapper):
        def forward(self, *args: object) -> Tensor:
            return 2.0 * self.module(*args)

    model, x = Doubling(mlp()), torch.randn(5, 3)
    assert unwrap(model) is model  # run as it is; only its ".module" leaves the names
    tracker = WeightTracker(model, init_mean="weights")
    assert tracker.names == [n for n, _ in model.module.named_parameters()]
    ens = SampledEnsemble(model, tracker.posterior(scale=0.0), 2, batching="vmap")
    with torch.no_grad():
        torch.testing.assert_close(ens.sample_logits(x)[1], model(x))


def test_method_states_move_between_a_wrapped_and_a_plain_factory() -> None:
    loader = DataLoader(TensorDataset(torch.randn(32, 3), torch.randint(0, 4, (32,))), 16)
    wrapped = build_method(
        "tradi", lambda: nn.DataParallel(mlp()), train=TRAIN, n_samples=2, scale=1.0
    )
    wrapped.fit(loader)
    plain = build_method("tradi", mlp, train=TRAIN, n_samples=2)
    plain.load_state_dict(wrapped.state_dict())
    plain.bn_loader = wrapped.bn_loader
    x = torch.randn(4, 3)
    torch.testing.assert_close(plain.sample_probs(x), wrapped.sample_probs(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_unsupported_wrappers_name_the_fix() -> None:
    fsdp1 = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    nn.Module.__init__(fsdp1)
    fsdp1._fsdp_wrapped_module = mlp()
    with pytest.raises(TypeError, match=r"FSDP1.*fully_shard"):
        WeightTracker(fsdp1)
    scripted = torch.jit.script(mlp())
    posterior = DiagonalGaussian(WeightTracker(scripted).mean(), WeightTracker(scripted).mean())
    with pytest.raises(TypeError, match=r"TorchScript.*before torch\.jit\.script"):
        SampledEnsemble(scripted, posterior, 2)


def test_a_lazy_layer_must_run_once_first() -> None:
    model = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(ValueError, match=r"'0\.weight'.*LazyLinear.*forward pass"):
        WeightTracker(model)
    model(torch.randn(2, 3))
    assert WeightTracker(model).num_tracked == 16


@pytest.mark.parametrize("name", ["tradi", "swag"])
def test_methods_initialise_lazy_layers_before_tracking(name: str) -> None:
    def lazy() -> nn.Module:
        return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(4))

    loader = DataLoader(TensorDataset(torch.randn(32, 3), torch.randint(0, 4, (32,))), 16)
    method = build_method(name, lazy, train=TRAIN, n_samples=2, scale=1.0)
    method.fit(loader)
    restored = build_method(name, lazy, train=TRAIN, n_samples=2)
    restored.load_state_dict(method.state_dict())
    restored.bn_loader = loader
    x = torch.randn(4, 3)
    torch.testing.assert_close(restored.sample_probs(x), method.sample_probs(x))
    assert method.sample_probs(x).shape == (2, 4, 4)
