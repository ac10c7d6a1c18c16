"""`explore`: modes from short tracked cycles after training, and their mixture predictive."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tradi
from tradi.inference.mixture import MixturePredictive
from tradi.training.exploration import explore


def _data(n: int = 96, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def _sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def test_modes_cost_and_the_users_model_untouched() -> None:
    model, train, val = _model(), _data(), _data(48, 1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = explore(model, train, val, optimizer=_sgd, cycles=2, epochs_per_cycle=2)
    assert result.cost_epochs == 4
    assert len(result.modes) == len(result.trackers) == 3
    assert isinstance(result.predictive, MixturePredictive)
    assert result.search is not None and result.search.scale > 0
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # the cycles moved away from the trained weights, and from each other
    first = [m[0].weight for m in result.modes]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])


def test_scale_zero_is_the_average_of_the_modes_softmax() -> None:
    model, train = _model(), _data()
    result = explore(model, train, optimizer=_sgd, cycles=2, epochs_per_cycle=1, scale=0.0)
    x = _data(32, 2)[0][0]
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(dim=1) for m in result.modes]).mean(dim=0)
    torch.testing.assert_close(result.predictive(x), expected)


def test_the_same_seed_gives_the_same_predictive_and_another_does_not() -> None:
    model, train, x = _model(), _data(), _data(32, 3)[0][0]
    one = explore(model, train, optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=1.0, seed=4)
    two = explore(model, train, optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=1.0, seed=4)
    other = explore(model, train, optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=1.0, seed=5)
    torch.testing.assert_close(one.predictive(x), two.predictive(x))
    assert not torch.allclose(one.predictive(x), other.predictive(x))


def test_a_tracker_of_the_training_serves_the_trained_mode() -> None:
    model, train = _model(), _data()
    tracker = tradi.WeightTracker(model)
    with pytest.warns(RuntimeWarning, match="no update yet"):  # a tracker never updated
        result = explore(
            model, train, optimizer=_sgd, cycles=1, epochs_per_cycle=1, tracker=tracker, scale=1.0
        )
    assert result.trackers[0] is tracker
    alone = explore(
        model, train, optimizer=_sgd, cycles=1, epochs_per_cycle=1, include_trained=False, scale=1.0
    )
    assert len(alone.modes) == 1


def test_bad_arguments_are_refused() -> None:
    model, train = _model(), _data()
    with pytest.raises(ValueError, match="cycles"):
        explore(model, train, optimizer=_sgd, cycles=0)
    with pytest.raises(ValueError, match="val_loader"):
        explore(model, train, optimizer=_sgd)
    with pytest.raises(ValueError, match="scale"):
        explore(model, train, optimizer=_sgd, scale=-1.0)
    with pytest.raises(ValueError, match="no Linear"):
        explore(nn.Sequential(nn.Flatten(), nn.Softmax(dim=1)), train, optimizer=_sgd, scale=1.0)


class _HeadFirst(nn.Module):
    """The head registered before the body: registration order is not the forward's order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(16, 3)
        self.body = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_auto_finds_the_layer_that_gives_the_logits() -> None:
    result = explore(_HeadFirst(), _data(), optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=1.0)
    assert all(member.last_layer == "head" for member in result.predictive.members)
    after_softmax = nn.Sequential(nn.Linear(5, 3), nn.LogSoftmax(dim=1))
    with pytest.raises(ValueError, match="no Linear/Conv/ConvTranspose module whose output"):
        explore(after_softmax, _data(), optimizer=_sgd, cycles=1, scale=1.0)


def test_an_optimizer_instance_is_refused_with_the_factory_to_pass() -> None:
    model = _model()
    with pytest.raises(TypeError, match="function parameters -> optimizer"):
        explore(model, _data(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scale=1.0)


def test_the_repr_is_short() -> None:
    result = explore(_model(), _data(), optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=1.0)
    assert len(repr(result)) < 200 and "scale=1.0" in repr(result)


def test_a_tracker_of_another_network_is_named() -> None:
    model, other = _model(), _model()
    with torch.no_grad():
        other[0].weight.add_(1.0)
    with pytest.warns(RuntimeWarning, match="differs from the tracker"):
        explore(
            model, _data(), optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=1.0,
            tracker=tradi.WeightTracker(other),
        )  # fmt: skip


def test_segmentation_labels_left_out_by_ignore_index() -> None:
    """Per-pixel logits [N, C, H, W] with unlabelled pixels (255): the search counts them
    nowhere; the last layer is a 1x1 convolution."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 2, 6, 6, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    y[:, :2] = 255  # unlabelled rows of every image
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    loss = nn.CrossEntropyLoss(ignore_index=255)
    result = explore(
        model, batches, batches, optimizer=_sgd, cycles=1, epochs_per_cycle=1, loss_fn=loss,
        ignore_index=255,
    )  # fmt: skip
    assert result.search is not None and result.last_layer == "2"
    probs = result.predictive(x[:4])
    assert probs.shape == (4, 3, 6, 6)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4, 6, 6))


def _shuffled(seed: int = 0) -> tuple[torch.utils.data.DataLoader, torch.Generator]:
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    generator = torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        data, batch_size=16, shuffle=True, generator=generator
    ), generator


def test_auto_leaves_the_loader_as_it_was_and_trains_as_the_named_layer() -> None:
    """The forward pass that finds the layer draws no shuffle the caller or the cycles see."""
    loader, generator = _shuffled()
    before = generator.get_state().clone()
    model = _model()
    weights = {}
    for last in ("auto", "3"):
        result = explore(model, loader, optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=0.0,
                         last_layer=last)  # fmt: skip
        assert torch.equal(generator.get_state(), before)
        assert result.last_layer == "3"
        weights[last] = result.modes[1][3].weight.detach().clone()
    torch.testing.assert_close(weights["auto"], weights["3"], rtol=0, atol=0)


def test_a_wrapped_model_gets_its_own_layer_names() -> None:
    loader, _ = _shuffled()
    wrapped = nn.DataParallel(_model())  # on CPU: a plain wrapper
    result = explore(wrapped, loader, optimizer=_sgd, cycles=1, epochs_per_cycle=1, scale=0.0)
    assert result.last_layer == "3"
    x = next(iter(loader))[0]
    assert result.predictive(x).shape == (16, 3)


def test_a_wrong_layer_name_is_refused_before_any_training() -> None:
    loader, _ = _shuffled()
    calls = []

    def factory(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        calls.append(1)
        return _sgd(params)

    with pytest.raises(ValueError, match="not a module of the model"):
        explore(_model(), loader, optimizer=factory, cycles=1, epochs_per_cycle=1, scale=0.0,
                last_layer="head")  # fmt: skip
    with pytest.raises(ValueError, match="is a ReLU"):
        explore(_model(), loader, optimizer=factory, cycles=1, epochs_per_cycle=1, scale=0.0,
                last_layer="1")  # fmt: skip
    assert not calls  # no cycle began
