"""Batches and outputs that are not one tensor (issue 11, item 3), through `ModelIO`.

The same `ModelIO` serves the ensemble, BatchNorm re-estimation, the training loop and the
methods; without it, a structure the defaults do not read raises an error naming the argument.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tradi import DiagonalGaussian, ModelIO, SampledEnsemble, WeightTracker, update_bn_stats
from tradi.methods import build_method
from tradi.training import fit

TRAIN = {"epochs": 2, "optimizer": "adam", "lr": 1e-2, "progress": False, "seed": 0}
Output = namedtuple("Output", ["logits", "features"])


@dataclass
class DataclassOutput:
    features: Tensor
    logits: Tensor


class TwoInputNet(nn.Module):
    """forward(x1, x2, scale=1.0) -> (logits, features): two inputs, a keyword, a tuple out."""

    def __init__(self, structure: str = "tuple") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 6), nn.Linear(2, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 4))
        self.structure = structure

    def forward(self, x1: Tensor, x2: Tensor, scale: float = 1.0) -> object:
        features = self.bn(self.a(x1) + self.b(x2))
        logits = scale * self.head(features)
        if self.structure == "dict":
            return {"features": features, "logits": logits}
        if self.structure == "namedtuple":
            return Output(logits, features)
        if self.structure == "dataclass":
            return DataclassOutput(features, logits)
        return logits, features


class Triples(Dataset):
    """(x1, x2, y) items: a batch the defaults cannot split."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x1, self.x2 = torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)
        self.y = (self.x1[:, 0] > 0).long() + 2 * (self.x2[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.x1[i], self.x2[i], self.y[i]


class Dicts(Triples):
    """{"image": (x1, x2), "label": y} items."""

    def __getitem__(self, i: int) -> dict[str, object]:  # type: ignore[override]
        return {"image": (self.x1[i], self.x2[i]), "label": self.y[i]}


TRIPLES = ModelIO(inputs_fn=lambda b: (b[0], b[1]), targets_fn=lambda b: b[2])
TRIPLES_TUPLE_OUT = ModelIO(TRIPLES.inputs_fn, TRIPLES.targets_fn, output_fn=lambda o: o[0])
DICTS = ModelIO(
    inputs_fn=lambda b: b["image"], targets_fn=lambda b: b["label"], output_fn=lambda o: o[0]
)


def posterior_of(model: nn.Module, scale: float) -> DiagonalGaussian:
    tracker = WeightTracker(model, init_mean="weights", init_variance=1e-2)
    return tracker.posterior(scale=scale)  # type: ignore[return-value]


def test_tuple_outputs_need_output_fn_and_then_match_the_network() -> None:
    model, x = TwoInputNet(), (torch.randn(5, 3), torch.randn(5, 2))
    ens = SampledEnsemble(model, posterior_of(model, 0.0), 2)
    with pytest.raises(TypeError, match=r"logits in a tuple of 2 items.*output_fn="):
        ens(x)
    ens = SampledEnsemble(model, posterior_of(model, 0.0), 2, io=TRIPLES_TUPLE_OUT)
    torch.testing.assert_close(ens(x), model.eval()(*x)[0].softmax(-1))
    # keyword arguments: a dict of inputs
    kwargs = {"x1": x[0], "x2": x[1], "scale": 2.0}
    torch.testing.assert_close(ens(kwargs), model(**kwargs)[0].softmax(-1))


@pytest.mark.parametrize("structure", ["dict", "namedtuple", "dataclass"])
def test_outputs_with_logits_are_read_by_default(structure: str) -> None:
    model, x = TwoInputNet(structure), (torch.randn(5, 3), torch.randn(5, 2))
    ens = SampledEnsemble(model, posterior_of(model, 0.0), 2, batching="vmap")
    reference = TwoInputNet().eval()(*x)[0]
    torch.testing.assert_close(ens.sample_logits(x)[0], reference)


def test_bn_loaders_of_any_structure() -> None:
    model = TwoInputNet()
    triples = DataLoader(Triples(64, seed=1), batch_size=16)
    with pytest.raises(TypeError, match=r"model inputs in a list of 3 items.*inputs_fn="):
        SampledEnsemble(model, posterior_of(model, 1.0), 2, bn_loader=triples)
    dicts = DataLoader(Dicts(64, seed=1), batch_size=16)
    with pytest.raises(TypeError, match=r"keys \['image', 'label'\].*inputs_fn="):
        update_bn_stats(model, dicts)
    # with inputs_fn: the statistics are the cumulative average of the batch moments
    update_bn_stats(model, triples, io=TRIPLES)
    features = [(model.a(b[0]) + model.b(b[1])).detach().numpy() for b in triples]
    np.testing.assert_allclose(
        model.bn.running_mean.numpy(), np.mean([f.mean(0) for f in features], 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        model.bn.running_var.numpy(), np.mean([f.var(0, ddof=1) for f in features], 0), rtol=1e-5
    )
    # the ensemble re-estimates per sample through the same io, loop and vmap alike
    probs = [
        SampledEnsemble(
            model, posterior_of(model, 1.0), 3, bn_loader=dicts, io=DICTS, batching=batching
        )(next(iter(dicts))["image"])
        for batching in ("loop", "vmap")
    ]
    torch.testing.assert_close(probs[0], probs[1])


def test_default_batches_and_the_errors_that_name_the_argument() -> None:
    io, x, y = ModelIO(), torch.randn(2, 3), torch.tensor([0, 1])
    assert io.inputs(x) is x and io.inputs([x]) is x and io.inputs((x, y)) is x
    assert io.inputs({"x": x, "y": y}) is x and io.targets({"x": x, "label": y}) is y
    assert io.targets((x, y)) is y
    pair = namedtuple("Pair", ["x", "label"])(x, y)
    assert io.inputs(pair) is x and io.targets(pair) is y
    with pytest.raises(TypeError, match=r"targets in a tuple of 3 items.*targets_fn="):
        io.targets((x, x, y))
    with pytest.raises(TypeError, match=r"keys \['input', 'x'\].*inputs_fn="):
        io.inputs({"input": x, "x": x})  # ambiguous: refused rather than guessed
    # the suggested call fits the structure seen: (x, y, idx) -> x and y, never (x, y) as inputs
    example = r"inputs_fn=lambda batch: batch\[0\], targets_fn=lambda batch: batch\[1\]"
    with pytest.raises(TypeError, match=example):
        io.inputs((x, y, torch.arange(2)))


def test_the_loop_and_every_method_read_batches_through_io() -> None:
    train, val = DataLoader(Dicts(96, seed=1), 16), DataLoader(Dicts(48, seed=2), 16)
    model = TwoInputNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    result = fit(model, train, optimizer=optimizer, epochs=6, val_loader=val, io=DICTS)
    assert result.history[-1]["val_accuracy"] > 0.5  # 4 classes: chance is 0.25
    x = next(iter(val))["image"]
    for name, options in [
        ("mcp", {}),
        ("mc_dropout", {"n_passes": 2}),
        ("deep_ensembles", {"n_members": 2}),
        ("tradi", {"n_samples": 2, "scale": "auto"}),
        ("swag", {"n_samples": 2}),
        ("gaussian_perturbation", {"n_samples": 2}),
    ]:
        method = build_method(name, TwoInputNet, train=TRAIN, io=DICTS, **options)
        method.fit(train, val)
        probs = method.predict(val)
        assert probs.shape == (method.forward_passes_per_input, 48, 4), name
        torch.testing.assert_close(method.sample_probs(x).mean(0).sum(-1), torch.ones(16))
