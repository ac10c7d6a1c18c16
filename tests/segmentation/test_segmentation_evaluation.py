"""The runner's dense evaluation: mIoU on known classes, and the test images kept for figures."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from tradi.data import Benchmark, TensorSplit
from tradi.experiments import evaluation
from tradi.experiments.evaluation import evaluate, panel_indices
from tradi.metrics import segmentation_metrics

CLASSES, OOD, IGNORE = 3, 3, 255


def _benchmark(labels: Tensor) -> Benchmark:
    split = TensorSplit(torch.randn(len(labels), 3, *labels.shape[1:]), labels)
    return Benchmark(
        name="seg",
        task="segmentation",
        train=split,
        val=split,
        test=split,
        ood_test=None,
        ood_val=None,
        num_classes=CLASSES,
        input_shape=(3, *labels.shape[1:]),
        class_names=("a", "b", "c"),
        ignore_index=IGNORE,
        ood_label=OOD,
    )


def test_panel_images_have_the_most_ood_pixels_of_each_run() -> None:
    labels = torch.zeros(9, 4, 4, dtype=torch.long)
    for image, pixels in ((1, 3), (2, 5), (4, 1), (7, 2), (8, 2)):
        labels[image].view(-1)[:pixels] = OOD
    batches = [(torch.zeros(len(y)), y) for y in labels.split(4)]
    # runs of 3: [0, 1, 2] -> 2 (5 pixels), [3, 4, 5] -> 4, [6, 7, 8] -> 7 (tie with 8: earliest)
    assert panel_indices(batches, OOD, 3).tolist() == [2, 4, 7]
    assert panel_indices(batches[:1], OOD, 9).tolist() == [0, 1, 2, 3]


def test_dense_evaluation_keeps_known_pixels_and_panels() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 7
    labels = torch.randint(0, CLASSES + 1, (n, 5, 6), generator=generator)
    labels[:, 0, :2] = IGNORE
    probs = torch.softmax(2 * torch.randn(n, CLASSES, 5, 6, generator=generator), dim=1)
    bench = _benchmark(labels)
    batches = [(bench.test.x[i : i + 3], labels[i : i + 3]) for i in range(0, n, 3)]

    def make_predictor() -> Any:
        def predict(loader: Iterable[Any]) -> Iterator[Tensor]:
            # two passes (each a probability map: the OOD scores check them) whose mean is
            # the fixed probability map
            for i in range(0, n, 3):
                part = probs[i : i + 3]
                # d_c = p_c (r_c - sum_j p_j r_j) / 2 sums to 0 and keeps p +- d >= 0
                r = torch.rand(part.shape, generator=generator)
                d = part * (r - (part * r).sum(dim=1, keepdim=True)) / 2
                yield torch.stack([part + d, part - d])

        return predict

    evaluation = evaluate(make_predictor, bench, batches, None)
    known = labels.masked_fill(labels == OOD, IGNORE)
    expected = segmentation_metrics(probs, known, IGNORE)
    for key, value in expected.items():
        assert evaluation.metrics[key] == pytest.approx(value, abs=1e-12)
    panels = evaluation.panels
    assert panels is not None
    index = panels["index"]
    assert index.tolist() == panel_indices(batches, OOD).tolist()
    torch.testing.assert_close(panels["labels"], labels[index])
    torch.testing.assert_close(panels["image"], bench.test.x[index])
    confidence, prediction = probs[index].max(dim=1)
    torch.testing.assert_close(panels["prediction"], prediction)
    torch.testing.assert_close(panels["confidence"], confidence)


def test_figure_scores_keep_the_test_sets_share_of_ood_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both pixel sets are thinned at one rate, so the figures' PR curves see the test set's
    in/out ratio; with room for every pixel, every pixel is kept."""
    generator = torch.Generator().manual_seed(1)
    n = 20
    labels = torch.randint(0, CLASSES, (n, 20, 20), generator=generator)
    labels[:, :4] = OOD  # 20% of the pixels
    labels[:, 4] = IGNORE
    probs = torch.softmax(torch.randn(n, CLASSES, 20, 20, generator=generator), dim=1)
    bench = _benchmark(labels)
    batches = [(bench.test.x[i : i + 5], labels[i : i + 5]) for i in range(0, n, 5)]

    def make_predictor() -> Any:
        return lambda loader: (probs[i : i + 5].unsqueeze(0) for i in range(0, n, 5))

    scores = probs.max(dim=1).values
    n_in, n_out = int(((labels != IGNORE) & (labels != OOD)).sum()), int((labels == OOD).sum())
    everything = evaluate(make_predictor, bench, batches, None)
    assert everything.scores_in is not None and everything.scores_out is not None
    torch.testing.assert_close(
        everything.scores_out.sort().values, scores[labels == OOD].sort().values
    )
    assert everything.scores_in.numel() == n_in

    monkeypatch.setattr(evaluation, "FIGURE_PIXELS", 1500)  # a rate of 1500 / 6400
    thinned = evaluate(make_predictor, bench, batches, None)
    assert thinned.scores_in is not None and thinned.scores_out is not None
    rate = 1500 / (n_in + n_out)
    for kept, total in ((thinned.scores_in, n_in), (thinned.scores_out, n_out)):
        sd = (total * rate * (1 - rate)) ** 0.5
        assert abs(kept.numel() - total * rate) < 4 * sd
