"""`tradi.evaluate` on a network hands it back untouched (issue 20, item 6): every submodule's
``training`` flag, every parameter and buffer bit-identical, and two evaluations equal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tradi
from tradi.metrics import classification_metrics


def _network() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)
    )
    with torch.no_grad():  # BatchNorm statistics away from their initial 0 / 1
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.append(nn.Softmax(dim=1))


def _data() -> tuple[list, list]:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 6, generator=generator), torch.randint(0, 3, (96,), generator=generator)
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    return data, [(batch + 4.0,) for batch, _ in data]


def _state(net: nn.Module) -> tuple[list[bool], dict[str, torch.Tensor]]:
    modes = [module.training for module in net.modules()]
    return modes, {name: t.detach().clone() for name, t in net.state_dict().items()}


def _assert_untouched(net: nn.Module, before: tuple[list[bool], dict[str, torch.Tensor]]) -> None:
    modes, tensors = _state(net)
    assert modes == before[0]
    assert tensors.keys() == before[1].keys()
    for name, value in tensors.items():  # parameters and buffers (num_batches_tracked too)
        assert torch.equal(value, before[1][name]), name


def _mixed(net: nn.Sequential) -> nn.Sequential:
    net.eval()
    net[3].train()  # dropout on, BatchNorm frozen: a user's own mix
    return net


@pytest.mark.parametrize("setup", [nn.Module.train, _mixed], ids=["train", "mixed"])
def test_a_network_comes_back_untouched_and_predicts_deterministically(setup) -> None:
    net = _network()
    setup(net)
    data, ood = _data()
    before = _state(net)
    first = tradi.evaluate(net, data, ood)
    _assert_untouched(net, before)
    second = tradi.evaluate(net, data, ood)
    _assert_untouched(net, before)
    assert first.classification == second.classification
    assert torch.equal(first.probs, second.probs)
    for name, value in first.scores_in.items():
        assert torch.equal(value, second.scores_in[name]), name
    # the prediction is the eval-mode network's
    labels = torch.cat([y for _, y in data])
    with torch.no_grad():
        expected = net.eval()(torch.cat([x for x, _ in data]))
    assert first.classification == pytest.approx(classification_metrics(expected, labels))


def test_modes_are_restored_when_prediction_fails() -> None:
    net = _network().train()
    before = _state(net)
    data, _ = _data()

    def failing():
        yield data[0]
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        tradi.evaluate(net, failing())
    _assert_untouched(net, before)


class _SamplingModule(nn.Module):
    """An MC-dropout-like module: samples with dropout on, whatever mode it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _network()
        self.seen: list[bool] = []

    def sample_probs(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.net[3].training)
        self.net.train()  # its own choice of mode while sampling
        torch.manual_seed(0)
        return torch.stack([self.net(x) for _ in range(3)])


def test_a_sampling_module_keeps_its_own_modes_and_gets_its_flags_back() -> None:
    module = _SamplingModule().eval()
    before = [m.training for m in module.modules()]
    data, _ = _data()
    tradi.evaluate(module, data)
    assert module.seen == [False, True, True]  # not forced into eval mode by evaluate
    assert [m.training for m in module.modules()] == before
