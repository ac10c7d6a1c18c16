"""The declared far-OOD set: digits' inverted test images, scored beside the near-OOD set."""

from __future__ import annotations

from functools import partial

import torch

from tradi.data import load_benchmark
from tradi.experiments.evaluation import evaluate, predictor
from tradi.experiments.loaders import TensorBatches
from tradi.methods import build_method
from tradi.metrics import ood_metrics
from tradi.models import build_model


def test_digits_far_ood_is_the_inverted_test_set_and_is_scored() -> None:
    bench = load_benchmark("digits", val_fraction=0.15, seed=0)
    assert bench.far_ood_test is not None
    x = bench.test.x
    torch.testing.assert_close(bench.far_ood_test.x, x.min() + x.max() - x)
    factory = partial(build_model, "mlp", bench.num_classes, bench.input_shape)
    method = build_method("mcp", factory, train={"epochs": 1, "progress": False})
    method.fit(TensorBatches(bench.train, 64, shuffle=True))
    loaders = [TensorBatches(s, 500) for s in (bench.test, bench.ood_test, bench.far_ood_test)]
    metrics = evaluate(partial(predictor, method), bench, *loaders).metrics
    with torch.no_grad():
        model = method.model.eval()  # type: ignore[union-attr]
        scores_in = model(bench.test.x).softmax(1).max(1).values
        scores_far = model(bench.far_ood_test.x).softmax(1).max(1).values
    expected = ood_metrics(scores_in, scores_far)
    assert metrics["far_auroc"] == expected["auroc"]
    assert metrics["far_fpr95_tpr_in"] == expected["fpr95_tpr_in"]
    assert metrics["auroc"] != metrics["far_auroc"]  # the near-OOD figure is its own
