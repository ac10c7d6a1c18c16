"""TRADI modes as a method (issue 19, beyond the paper): options checked, the modes' mixture
through the method interface against a NumPy recomputation of the probit predictive, its cost,
determinism, and one shared training run for the seed in the experiment runner."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tradi.data import Benchmark
from tradi.experiments.config import config_from_dict
from tradi.experiments.runner import run_experiment
from tradi.methods import TradiModesOptions, build_method
from tradi.tracking import WeightTracker
from tradi.training import loop
from tradi.training.exploration import mode_mixture

TRAIN = {"epochs": 2, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 3}
OPTIONS = {"cycles": 2, "epochs_per_cycle": 1, "scale": 30.0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cycles": 0}, "cycles must be >= 1"),
        ({"epochs_per_cycle": 0}, "epochs_per_cycle must be >= 1"),
        ({"link": "laplace"}, r"link must be one of \['mc', 'probit', 'probit_shared'\]"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"scale": -1.0}, "scale must be a number >= 0"),
        ({"n_samples": 0}, "n_samples must be >= 1"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TradiModesOptions(**options)


def test_unknown_option_and_missing_val_loader_fail_before_training(
    model_factory, train_loader
) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['cycle'\].*cycles"):
        build_method("tradi_modes", model_factory, cycle=2)
    method = build_method("tradi_modes", model_factory, train=TRAIN)
    with pytest.raises(ValueError, match="val_loader"):
        method.fit(train_loader)
    with pytest.raises(RuntimeError, match="fit"):
        method.sample_probs(torch.zeros(2, 4))


def test_the_cycles_use_the_configs_optimizer_with_lr_and_weight_decay_replaced(
    model_factory,
) -> None:
    params = list(model_factory().parameters())
    sgd = {**TRAIN, "optimizer": "sgd", "momentum": 0.8, "weight_decay": 1e-3}
    plain = build_method("tradi_modes", model_factory, train=sgd)._cycle_optimizer(params)
    assert isinstance(plain, torch.optim.SGD)
    assert [plain.defaults[k] for k in ("lr", "momentum", "weight_decay")] == [1e-2, 0.8, 1e-3]
    changed = build_method("tradi_modes", model_factory, train=sgd, lr=0.05, weight_decay=0.0)
    optimizer = changed._cycle_optimizer(params)
    assert [optimizer.defaults[k] for k in ("lr", "momentum", "weight_decay")] == [0.05, 0.8, 0.0]


def _probit_by_hand(method: Any, x: torch.Tensor) -> np.ndarray:
    """The mixture recomputed in float64 NumPy from each mode's network and tracked variances:
    logit variance v = (h^2) (s^2 var_W)^T + s^2 var_b, h the last layer's input, and the probit
    softmax(m / sqrt(1 + pi/8 v)) (MacKay 1992), averaged over the modes."""
    scale = method.mixture_scale
    members = []
    for mode, tracker in zip(method.modes, method.trackers, strict=True):
        with torch.no_grad():
            h = mode[:-1](x).double().numpy()
            m = mode(x).double().numpy()
        var = {k: v.double().numpy() for k, v in tracker.variance().items()}
        v = h**2 @ (scale**2 * var["4.weight"]).T + scale**2 * var["4.bias"]
        z = m / np.sqrt(1.0 + math.pi / 8.0 * v)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        members.append(e / e.sum(axis=1, keepdims=True))
    return np.mean(members, axis=0)


def test_the_mixture_of_modes_through_the_method_interface(
    model_factory, train_loader, val_loader
) -> None:
    method = build_method("tradi_modes", model_factory, train=TRAIN, **OPTIONS)
    info = method.fit(train_loader, val_loader)
    # cost: the shared run's 2 epochs, then 2 cycles of 1 epoch, all in train_seconds
    assert [run.epochs for run in info.runs] == [2, 1, 1]
    assert info.train_seconds == pytest.approx(sum(run.train_seconds for run in info.runs))
    assert info.scale_search is None and info.selection_seconds == 0.0  # a fixed scale
    assert method.forward_passes_per_input == len(method.modes) == 3
    assert not method.gives_logits

    x = next(iter(val_loader))[0]
    members = method.sample_probs(x)
    assert members.shape == (3, 32, 3)
    mean = method.predict_mean(x)  # what a user reads: probabilities [N, C]
    assert mean.shape == (32, 3) and bool((mean >= 0).all())
    torch.testing.assert_close(mean.sum(dim=1), torch.ones(32))
    expected = _probit_by_hand(method, x)
    # float32 against float64: 1e-5 on probabilities
    np.testing.assert_allclose(mean.double().numpy(), expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        plain = torch.stack([mode(x).softmax(dim=1) for mode in method.modes]).mean(0)
    assert (mean - plain).abs().max() > 1e-3  # the spread matters: the comparison means something

    again = build_method("tradi_modes", model_factory, train=TRAIN, **OPTIONS)
    again.fit(train_loader, val_loader)
    assert torch.equal(again.sample_probs(x), members)  # a seed's result, bit for bit
    other = build_method("tradi_modes", model_factory, train={**TRAIN, "seed": 4}, **OPTIONS)
    other.fit(train_loader, val_loader)
    assert not torch.allclose(other.sample_probs(x), members)


def test_auto_scale_is_chosen_on_validation_and_reported(
    model_factory, train_loader, val_loader
) -> None:
    method = build_method(
        "tradi_modes", model_factory, train=TRAIN, cycles=1, epochs_per_cycle=1, link="mc",
        n_samples=3,
    )  # fmt: skip
    info = method.fit(train_loader, val_loader)
    assert info.scale_search is not None and info.scale_search.rule == "min_nll"
    assert method.mixture_scale == info.scale_search.scale
    assert info.selection_seconds == info.scale_search.seconds > 0
    reloaded = build_method(
        "tradi_modes", model_factory, train=TRAIN, cycles=1, epochs_per_cycle=1, link="mc",
        n_samples=3,
    )  # fmt: skip
    reloaded.load_state_dict(method.state_dict())
    assert reloaded.scale_search == method.scale_search
    torch.testing.assert_close(
        reloaded.predict(val_loader), method.predict(val_loader), rtol=0, atol=0
    )


CONFIG: dict[str, Any] = {
    "name": "tiny",
    "description": "synthetic blobs",
    "benchmark": "mnist-notmnist",  # any known name: the data is the synthetic benchmark
    "data": {"val_fraction": 0.1, "split_seed": 0, "batch_size": 32, "eval_batch_size": 64},
    "model": {"name": "mlp", "options": {"hidden_features": [16, 16], "dropout": 0.1}},
    "train": {"epochs": 3, "optimizer": "adam", "lr": 0.01, "scheduler": "step", "step_size": 2},
    "methods": {
        "mcp": {},
        "tradi": {"scale": 10.0, "n_samples": 3},
        "tradi_modes": {"cycles": 2, "epochs_per_cycle": 1},
    },
    "seeds": [0],
    "threads": 1,
}


@pytest.mark.filterwarnings("ignore:WeightTracker.posterior")  # tradi at a fixed scale
def test_the_runner_trains_the_seeds_network_once_and_resumes_to_the_same_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blobs: Callable[..., Benchmark]
) -> None:
    """mcp, tradi and tradi_modes share one 3-epoch run; tradi_modes adds its 2 cycles of one
    epoch: 5 epochs in all (7 more if each method trained alone). A pair recomputed on resume
    (its result lost, the shared run trained again) gives the same row: explore is a function
    of the trained state and the seed."""
    epochs = {"count": 0}
    real_epoch = loop._train_one_epoch

    def counting_epoch(*args: Any, **kwargs: Any) -> Any:
        epochs["count"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_one_epoch", counting_epoch)
    config = config_from_dict(CONFIG)
    results = run_experiment(config, tmp_path, benchmark=blobs(with_ood_val=False), progress=False)
    assert epochs["count"] == 3 + 2
    pairs = {pair["method"]: pair for pair in results["pairs"]}
    modes = pairs["tradi_modes"]
    assert modes["training_run"]["methods"] == ["mcp", "tradi", "tradi_modes"]
    assert modes["final_val"][0] == pairs["mcp"]["final_val"][0]  # the same network
    assert modes["epochs"] == [3, 1, 1]
    run = modes["training_run"]
    # charged: the run without the other methods' callbacks, its tracker and its cycles
    assert modes["train_seconds"] > run["seconds"] - run["callback_seconds"]
    assert modes["scale_selection"]["rule"] == "min_nll"
    (row,) = modes["rows"]
    assert row["label"] == "TRADI modes (beyond the paper)" and row["forward_passes"] == 3
    assert row["scale"] == modes["scale_selection"]["scale"]  # the chosen scale in the row
    assert "energy" in row["ood_scores_left_out"]  # probabilities only: no logit scores
    assert "mutual_information" in row["ood_scores"]  # an ensemble score over the modes
    assert "TRADI modes (beyond the paper)" in (tmp_path / "report.md").read_text()

    (tmp_path / "state/tradi_modes/seed_0/result.json").unlink()
    resumed = run_experiment(
        config, tmp_path, benchmark=blobs(with_ood_val=False), progress=False, resume=True
    )
    again = {pair["method"]: pair for pair in resumed["pairs"]}["tradi_modes"]
    assert again["rows"][0]["metrics"] == row["metrics"]
    assert again["scale_selection"]["scale"] == modes["scale_selection"]["scale"]


def test_a_saved_mixture_needs_one_tracker_per_mode(model_factory) -> None:
    net = model_factory()
    with pytest.raises(ValueError, match="2 modes but 1 trackers"):
        mode_mixture([net, net], [WeightTracker(net)], 1.0, last_layer=None)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        mode_mixture([net], [WeightTracker(net)], -1.0, last_layer=None)
