"""The uncertainty quantities of `tradi.metrics.scores` against NumPy and closed forms
(float64 inputs: 1e-12 relative)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tradi.metrics import mutual_information, sampled_variance, uncertainty_scores


def sample_probs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * 2).softmax(dim=2)


def test_scores_match_numpy() -> None:
    probs = sample_probs((5, 40, 6), seed=0)
    p = probs.numpy()
    mean = p.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum(axis=1)
    expected_entropy = -(p * np.log(p)).sum(axis=2).mean(axis=0)
    scores = uncertainty_scores(probs)
    assert set(scores) == {"msp", "entropy", "mutual_information", "variation_ratio", "variance"}
    np.testing.assert_allclose(scores["msp"].numpy(), mean.max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(scores["entropy"].numpy(), -entropy, rtol=1e-12)
    np.testing.assert_allclose(
        scores["mutual_information"].numpy(), -(entropy - expected_entropy), atol=1e-12
    )
    np.testing.assert_allclose(
        mutual_information(probs).numpy(), entropy - expected_entropy, atol=1e-12
    )
    np.testing.assert_allclose(scores["variance"].numpy(), -p.var(axis=0).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(sampled_variance(probs).numpy(), p.var(axis=0).mean(axis=1))


def test_closed_forms() -> None:
    uniform = torch.full((3, 2, 4), 0.25)
    scores = uncertainty_scores(uniform)
    assert scores["entropy"].tolist() == pytest.approx([-math.log(4)] * 2)
    assert scores["mutual_information"].tolist() == pytest.approx([0.0, 0.0], abs=1e-7)
    # two one-hot samples that disagree: entropy log 2, each sample certain, so MI = log 2;
    # per-class variance 0.25 on the two classes involved, 0 on the other two
    disagree = torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]]])
    assert mutual_information(disagree).item() == pytest.approx(math.log(2))
    assert sampled_variance(disagree).item() == pytest.approx(0.125)


def test_single_sample_has_no_disagreement() -> None:
    scores = uncertainty_scores(sample_probs((1, 10, 3), seed=1))
    for name in ("mutual_information", "variation_ratio", "variance"):
        assert torch.equal(scores[name], torch.zeros(10, dtype=torch.float64)), name


def test_segmentation_shapes_match_per_pixel_computation() -> None:
    probs = sample_probs((4, 2, 3, 5, 6), seed=2)  # [S, N, C, H, W]
    scores = uncertainty_scores(probs)
    pixel = probs[:, 1, :, 3, 4].unsqueeze(1)  # [S, 1, C]
    single = uncertainty_scores(pixel)
    for key, value in scores.items():
        assert value.shape == (2, 5, 6), key
        assert value[1, 3, 4].item() == pytest.approx(single[key].item(), rel=1e-12), key
