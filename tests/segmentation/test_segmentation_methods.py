"""Every method of the runner on ENet's dense outputs: the streamed per-batch evaluation gives
the metrics of all its predictions held in memory at once."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import torch

from tradi.data import Benchmark, TensorSplit
from tradi.experiments.evaluation import evaluate, predictor
from tradi.experiments.loaders import TensorBatches
from tradi.experiments.runner import loss_function
from tradi.methods import SamplingMethod, build_method
from tradi.metrics import (
    OODMetrics,
    classification_metrics,
    ood_metrics,
    segmentation_metrics,
)
from tradi.models import build_model

CLASSES, OOD, IGNORE = 3, 3, 255
SHAPE = (3, 16, 24)
OPTIONS: dict[str, dict[str, Any]] = {
    "mcp": {},
    "mc_dropout": {"n_passes": 3},
    "deep_ensembles": {"n_members": 2},
    "swag": {"n_samples": 3, "start_epoch": 0},
    "gaussian_perturbation": {"scale": 1e-2, "n_samples": 3},
    "tradi": {"scale": 10.0, "n_samples": 3},
}


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    generator = torch.Generator().manual_seed(0)

    def split(n: int, test: bool = False) -> TensorSplit:
        y = torch.randint(0, CLASSES, (n, *SHAPE[1:]), generator=generator)
        y[:, :2, :3] = IGNORE
        if test:
            y[:, 5:9, 4:8] = OOD  # an unseen object in every test image
        x = torch.randn(n, *SHAPE, generator=generator) + y.clamp(max=CLASSES).unsqueeze(1)
        return TensorSplit(x, y)

    return Benchmark(
        name="seg",
        task="segmentation",
        train=split(8),
        val=split(4),
        test=split(5, test=True),
        ood_test=None,
        ood_val=None,
        num_classes=CLASSES,
        input_shape=SHAPE,
        class_names=("a", "b", "c"),
        ignore_index=IGNORE,
        ood_label=OOD,
        class_weights=torch.tensor([1.0, 2.0, 0.5]),
    )


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", list(OPTIONS))
def test_streamed_dense_evaluation_equals_all_predictions_at_once(
    name: str, bench: Benchmark
) -> None:
    method = build_method(
        name,
        partial(build_model, "enet", CLASSES, SHAPE, dropout=0.1),
        train={"epochs": 2, "optimizer": "adam", "lr": 1e-3, "progress": False},
        loss_fn=loss_function(bench),
        **OPTIONS[name],
    )
    train = TensorBatches(bench.train, 4, shuffle=True)
    method.fit(train, TensorBatches(bench.val, 4))
    test = TensorBatches(bench.test, 2)  # batches of 2, 2 and 1 image
    scale = method.noise_scale if isinstance(method, SamplingMethod) else None
    streamed = evaluate(partial(predictor, method, scale), bench, test, None).metrics

    samples = method.predict(test)  # [S, N, C, H, W], all in memory
    assert samples.shape == (method.forward_passes_per_input, 5, CLASSES, *SHAPE[1:])
    probs, labels = samples.mean(dim=0), bench.test.y
    known = labels.masked_fill(labels == OOD, IGNORE)
    expected = {
        **classification_metrics(probs, known, ignore_index=IGNORE),
        **segmentation_metrics(probs, known, IGNORE),
    }
    for key, value in expected.items():
        assert streamed[key] == pytest.approx(value, abs=1e-6), key
    # OOD metrics: the same score histogram as all pixels at once, and within its stated bound
    # of the exact sort-based metrics
    scores = probs.max(dim=1).values
    at_once = OODMetrics()
    at_once.update(scores, labels == OOD, labels != IGNORE)
    exact = ood_metrics(scores[known != IGNORE], scores[labels == OOD])
    bounds = at_once.error_bounds()
    for key, value in at_once.compute().items():
        assert streamed[key] == value, key
        assert abs(value - exact[key]) <= bounds[key] + 1e-12, key
