"""Tests written against the mutants that survived mutmut on `trunk.py` (docs/testing.md):
nested trunk calls, a module reused inside the trunk and after the sampled part, a module
called with keyword arguments, a trunk module called twice, a parent that completes while
holding a sampled parameter, and the listing of valid module names in refusals.

Each replayed pass is checked against the plain pass with the same sampled weights
(`torch.func.functional_call` on the whole model, no trunk): what replay must reproduce."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from tradi.inference.trunk import TrunkCache, sampled_parameter_names


class Scale(nn.Module):
    """Multiplies by a keyword argument; counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor, *, factor: float = 1.0) -> Tensor:
        self.calls += 1
        return x * factor


class Nested(nn.Module):
    """A trunk block holding a ReLU that the sampled part reuses, a keyword-argument module
    called in the trunk and after the head, and a module called twice in the trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(4, 4), self.act)
        self.scale = Scale()
        self.twice = Scale()
        self.head = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.twice(self.twice(self.block(x), factor=0.5), factor=3.0)
        h = self.scale(h, factor=2.0) - 0.3
        return self.scale(self.act(self.head(h)), factor=-1.5)


class Reader(nn.Module):
    """Its first call reads its sampled child's weight directly (no call of the child) after a
    call of another child; its second call goes through the sampled child."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.lin = nn.Linear(3, 3)

    def forward(self, x: Tensor, read: bool) -> Tensor:
        return self.pre(x) @ self.lin.weight.T if read else self.lin(x)


class ReadsFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reader = Reader()

    def forward(self, x: Tensor) -> Tensor:
        return self.reader(self.reader(x, read=True), read=False)


def _replayed_and_plain(
    model: nn.Module, modules: list[str], x: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Three sampled weight sets for `modules`: the outputs with replay and without."""
    sampled = sampled_parameter_names(model, modules)
    cache = TrunkCache(model, sampled)
    g = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    sets = [
        {n: params[n] + torch.randn(params[n].shape, generator=g) for n in sorted(sampled)}
        for _ in range(3)
    ]
    with torch.no_grad():
        plain = [functional_call(model, weights, (x,)) for weights in sets]
        trunk = cache.record(lambda: model(x))
        with cache.replay(trunk):
            replayed = [functional_call(model, weights, (x,)) for weights in sets]
    return replayed, plain


@pytest.mark.parametrize(
    ("build", "modules", "features"),
    [(Nested, ["head"], 4), (ReadsFirst, ["reader.lin"], 3)],
    ids=["nested, reused and keyword modules", "a parent completed holding a sampled weight"],
)
def test_replay_equals_the_plain_pass(build: type, modules: list[str], features: int) -> None:
    torch.manual_seed(0)
    model = build().eval()
    replayed, plain = _replayed_and_plain(model, modules, torch.randn(5, features))
    for got, expected in zip(replayed, plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_replay_runs_no_trunk_module_and_only_the_calls_after_the_sampled_part() -> None:
    torch.manual_seed(0)
    model = Nested().eval()
    x = torch.randn(2, 4)
    cache = TrunkCache(model, sampled_parameter_names(model, ["head"]))
    with torch.no_grad():
        trunk = cache.record(lambda: model(x))
        twice, scale = model.twice.calls, model.scale.calls
        assert (twice, scale) == (2, 1)  # recorded up to the head
        with cache.replay(trunk):
            model(x)
            model(x)
    assert model.twice.calls == twice  # both trunk calls replayed, twice per pass
    assert model.scale.calls == scale + 2  # only the call after the head runs


def test_refusals_list_the_modules_that_register_parameters_themselves() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 2))
    with pytest.raises(ValueError) as unknown:
        sampled_parameter_names(model, ["head"])
    assert str(unknown.value) == (
        "sample_modules ['head'] are not modules of Sequential; modules with parameters: "
        "['0.0', '1']"
    )
    with pytest.raises(ValueError) as empty:
        sampled_parameter_names(model, ["0.1"])
    assert str(empty.value) == (
        "sample_modules ['0.1'] hold no parameter: nothing to sample; modules with "
        "parameters: ['0.0', '1']"
    )
