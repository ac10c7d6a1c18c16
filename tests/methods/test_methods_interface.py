"""One interface for every method (the paper's six, IVON, temperature scaling, TRADI modes): the factory, option checking, shapes, passes per input,
and a state_dict round trip that predicts identically without retraining."""

from __future__ import annotations

import copy

import pytest
import torch

from tradi.methods import METHODS, ScaleSelection, build_method
from tradi.training import TrainConfig

TRAIN = {"epochs": 2, "optimizer": "adam", "lr": 1e-2, "progress": False}
SMALL = {
    "mcp": {},
    "mc_dropout": {"n_passes": 4},
    "deep_ensembles": {"n_members": 2},
    "swag": {"n_samples": 3, "start_epoch": 0, "rank": 2},
    "gaussian_perturbation": {"scale": 0.05, "n_samples": 3},
    "tradi": {"n_samples": 3, "scale": 10.0},
    "ivon": {"n_samples": 3},
    "temperature_scaling": {},
    "tradi_modes": {"cycles": 2, "epochs_per_cycle": 2, "scale": 10.0},
}


def test_every_method_name_is_registered() -> None:
    assert sorted(METHODS) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_method_trains_and_predicts_the_same_way(
    name: str, model_factory, train_loader, val_loader
) -> None:
    if name == "ivon":
        pytest.importorskip("ivon")  # the optional ivon-opt package
    method = build_method(name, model_factory, train=TRAIN, **SMALL[name])
    info = method.fit(train_loader, val_loader)
    passes = method.forward_passes_per_input
    assert passes == {"mcp": 1, "mc_dropout": 4, "deep_ensembles": 2, "temperature_scaling": 1}.get(
        name, 3
    )
    assert info.train_seconds == pytest.approx(sum(r.train_seconds for r in info.runs))
    assert all(r.epochs == 2 for r in info.runs)

    probs = method.predict(val_loader)
    assert probs.shape == (passes, 96, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(passes, 96))
    _assert_close_to_bayes(probs.mean(0), val_loader)

    reloaded = build_method(name, model_factory, train=TRAIN, **SMALL[name])
    reloaded.load_state_dict(method.state_dict())
    if hasattr(reloaded, "bn_loader"):
        reloaded.bn_loader = train_loader
    torch.testing.assert_close(reloaded.predict(val_loader), probs, rtol=0, atol=0)


def _assert_close_to_bayes(mean_probs: torch.Tensor, loader) -> None:
    """The blobs (class c centred at 2 e_c, unit spread, equal priors) have the Bayes rule
    argmax_c x_c and posterior softmax(2 x_c): accuracy 0.92 and NLL 0.23 on this split, chance
    0.33 and log 3 = 1.10. After two epochs the six methods measured agreement 0.80-0.89 with
    the Bayes rule and NLL 0.65-0.73; a wrong average, permuted classes or an untrained
    network falls far outside the margins below."""
    inputs = torch.cat([x for x, _ in loader]).double()
    labels = torch.cat([y for _, y in loader])
    bayes = (2 * inputs[:, :3]).softmax(-1)
    agreement = (mean_probs.argmax(-1) == bayes.argmax(-1)).double().mean()
    assert agreement >= 0.75, agreement
    nll = -mean_probs.double()[torch.arange(len(labels)), labels].log().mean()
    assert nll <= 0.8, nll


def _mean_by_hand(method, x: torch.Tensor) -> torch.Tensor:
    """Each method's predictive mean from its trained parts, evaluated with plain torch."""
    with torch.no_grad():
        if method.name == "deep_ensembles":
            nets = [member.eval() for member in method.members]
        elif method.name == "mc_dropout":
            net = copy.deepcopy(method.model).eval()
            for module in net.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.train()
            torch.manual_seed(0)
            nets = [net] * method.options.n_passes
        elif method.name == "mcp":
            nets = [method.model.eval()]
        elif method.name == "tradi_modes":  # each mode's probit over its last layer's variance
            scale, members = method.mixture_scale, []
            for net, tracker in zip(method.modes, method.trackers, strict=True):
                var = {k: scale**2 * v for k, v in tracker.variance().items()}
                v = net[:-1](x) ** 2 @ var["4.weight"].T + var["4.bias"]
                members.append((net(x) / (1 + torch.pi / 8 * v).sqrt()).softmax(-1))
            return torch.stack(members).mean(0)
        elif method.name == "temperature_scaling":
            assert method.temperature is not None and method.temperature > 0
            return (method.model.eval()(x) / method.temperature).softmax(-1)
        else:  # a sampled ensemble: every weight set loaded into a copy of the network
            nets = []
            for weights in method.ensemble()._sets:
                net = copy.deepcopy(method.model)
                net.load_state_dict({**net.state_dict(), **weights})
                nets.append(net.eval())
        return torch.stack([net(x).softmax(-1) for net in nets]).mean(0)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_predict_mean_equals_the_mean_evaluated_by_hand(
    name: str, model_factory, train_loader, val_loader
) -> None:
    options = dict(SMALL[name])
    if name in ("swag", "tradi"):
        options["bn_update"] = False  # the hand evaluation keeps the trained BN statistics
    method = build_method(name, model_factory, train=TRAIN, **options)
    method.fit(train_loader, val_loader)
    x = next(iter(val_loader))[0]
    torch.manual_seed(0)  # MC dropout draws its masks from the global random state
    torch.testing.assert_close(method.predict_mean(x), _mean_by_hand(method, x))


def test_unknown_names_and_options_fail_clearly(model_factory) -> None:
    with pytest.raises(ValueError, match="unknown method 'laplace'"):
        build_method("laplace", model_factory)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['n_sample'\].*n_samples"):
        build_method("tradi", model_factory, n_sample=5)
    with pytest.raises(ValueError, match="covariance must be one of"):
        build_method("tradi", model_factory, covariance="full")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lr_decay'\]"):
        build_method("mcp", model_factory, train={"lr_decay": 0.1})
    with pytest.raises(TypeError, match="MCDropoutOptions"):
        METHODS["mc_dropout"](model_factory, METHODS["mcp"].options_type())
    with pytest.raises(ValueError, match=r"a number >= 0 .* or 'auto'"):
        build_method("tradi", model_factory, scale="large")
    with pytest.raises(ValueError, match="mcp has no noise scale"):
        build_method("mcp", model_factory, selection=ScaleSelection())


def test_a_noise_scale_left_to_validation_needs_a_validation_loader(
    model_factory, train_loader
) -> None:
    method = build_method("gaussian_perturbation", model_factory, train=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="no val_loader"):
        method.fit(train_loader)


def test_prediction_before_training_fails_clearly(model_factory, val_loader) -> None:
    for name in SMALL:
        with pytest.raises(RuntimeError, match="call fit"):
            build_method(name, model_factory, **SMALL[name]).predict(val_loader)


def _segmentation_data(seed: int) -> torch.utils.data.DataLoader:
    """Pixels labelled by the sign of channel 0; a void row marked 255 (ignore_index)."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(16, 2, 4, 5, generator=g)
    targets = (inputs[:, 0] > 0).long()
    targets[:, 0, :] = 255
    return torch.utils.data.DataLoader(list(zip(inputs, targets, strict=True)), batch_size=8)


def _segmenter() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(2, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(8, 2, 1)
    )


@pytest.mark.parametrize("name", ["mc_dropout", "tradi"])
def test_dense_predictions_and_scale_selection_skip_void_pixels(name: str) -> None:
    train, val = _segmentation_data(0), _segmentation_data(1)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    options: dict = {"n_passes": 2} if name == "mc_dropout" else {"n_samples": 2, "scale": "auto"}
    if name == "tradi":
        options["selection"] = ScaleSelection(rule="min_nll", iterations=1, low=0.1, high=10.0)
    method = build_method(name, _segmenter, train=TRAIN, loss_fn=loss_fn, **options)
    info = method.fit(train, val)
    probs = method.predict(val)
    assert probs.shape == (2, 16, 2, 4, 5)
    torch.testing.assert_close(probs.sum(2), torch.ones(2, 16, 4, 5))
    if name == "mc_dropout":
        assert info.scale_search is None  # no noise scale to choose
        return
    assert info.scale_search is not None and info.scale_search.rule == "min_nll"
    chosen = min(info.scale_search.points, key=lambda p: p.val_nll)  # the rule, written out
    assert info.scale_search.scale == chosen.scale
    assert method.noise_scale == info.scale_search.scale
    targets = torch.cat([y for _, y in val])
    valid = targets != 255
    for point in info.scale_search.points:
        mean = torch.cat([method.ensemble(point.scale)(x) for x, _ in val])
        p_target = mean.gather(1, targets.clamp(max=1).unsqueeze(1)).squeeze(1)
        assert point.val_nll == pytest.approx(float(-p_target.log()[valid].mean()), rel=1e-5)
