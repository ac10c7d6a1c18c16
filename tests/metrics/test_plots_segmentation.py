"""Segmentation panels show the given maps, the OOD outline where the mask is, and save."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tradi.plots import save_figure, segmentation_panels

H, W = 18, 24


def scene() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(H, W, dtype=torch.long)
    labels[9:] = 3
    labels[4:10, 6:12] = 9  # the OOD object: rows 4..9, columns 6..11
    labels[0, 0] = 11  # ignored
    confidence = 0.8 + 0.2 * torch.rand(H, W, generator=generator)
    confidence[labels == 9] = 0.3
    prediction = labels.clone()
    prediction[labels == 9] = 8
    image = torch.randn(3, H, W, generator=generator) * 2 + 1  # normalised, outside [0, 1]
    return {"image": image, "labels": labels, "confidence": confidence, "prediction": prediction}


def test_panels_show_inputs_and_outline_the_ood_mask() -> None:
    data = scene()
    ood = data["labels"] == 9
    figure = segmentation_panels(
        data["image"],
        {
            "MCP": (data["prediction"], data["confidence"]),
            "TRADI": (data["prediction"], data["confidence"] ** 2),
        },
        num_classes=11,
        ground_truth=data["labels"],
        ood_mask=ood,
    )
    grid = figure.axes[:6]  # row-major 2 x 3, then the colour bar
    image = grid[0].images[0].get_array()
    expected = data["image"].movedim(0, -1).double()
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(image, expected.numpy())
    truth = grid[3].images[0].get_array()
    assert truth.mask[0, 0] and truth.mask.sum() == 1  # class 11 is outside the 11 classes
    np.testing.assert_array_equal(truth.data[~truth.mask], data["labels"].numpy()[~truth.mask])
    np.testing.assert_array_equal(grid[1].images[0].get_array().data, data["prediction"].numpy())
    for axes, expected_confidence in (
        (grid[4], data["confidence"]),
        (grid[5], data["confidence"] ** 2),
    ):
        shown = axes.images[0]
        np.testing.assert_allclose(shown.get_array(), expected_confidence.numpy())
        assert shown.get_clim() == (0.0, 1.0)
    assert [grid[i].get_title() for i in (1, 2, 4, 5)] == [
        "MCP: prediction",
        "TRADI: prediction",
        "MCP: confidence",
        "TRADI: confidence",
    ]
    for axes in grid:
        (outline,) = axes.collections
        vertices = np.concatenate([path.vertices for path in outline.get_paths()])
        # the 0.5 level runs half-way between the mask's pixel centres and their neighbours
        np.testing.assert_allclose(vertices.min(axis=0), [5.5, 3.5])
        np.testing.assert_allclose(vertices.max(axis=0), [11.5, 9.5])


def test_without_ground_truth_or_mask() -> None:
    data = scene()
    figure = segmentation_panels(
        data["image"][0], {"MCP": (data["prediction"], data["confidence"])}, num_classes=11
    )
    assert not figure.axes[2].get_visible()  # the ground-truth slot
    assert all(not axes.collections for axes in figure.axes[:4])


def test_bad_shapes_are_rejected() -> None:
    data = scene()
    with pytest.raises(ValueError, match=r"MCP: prediction \(18, 24\) and confidence \(18, 23\)"):
        segmentation_panels(
            data["image"], {"MCP": (data["prediction"], data["confidence"][:, 1:])}, num_classes=11
        )
    with pytest.raises(ValueError, match="class_colors has 2 colours for 11 classes"):
        segmentation_panels(
            data["image"],
            {"MCP": (data["prediction"], data["confidence"])},
            num_classes=11,
            class_colors=["red", "blue"],
        )


def test_save_figure_writes_png_and_svg(tmp_path: Path) -> None:
    data = scene()
    figure = segmentation_panels(
        data["image"], {"MCP": (data["prediction"], data["confidence"])}, num_classes=11
    )
    png, svg = save_figure(figure, tmp_path / "figs" / "camvid.v1")
    assert png == tmp_path / "figs" / "camvid.v1.png" and svg.name == "camvid.v1.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert "<svg" in text and text.count("<image") == 4  # image, two maps, colour bar
    with pytest.raises(ValueError, match="without extension"):
        save_figure(figure, tmp_path / "camvid.png")


def test_class_legend_lists_the_classes_shown() -> None:
    data = scene()
    names = [f"class {index}" for index in range(11)]
    figure = segmentation_panels(
        data["image"],
        {"MCP": (data["prediction"], data["confidence"])},
        num_classes=11,
        ground_truth=data["labels"],
        class_names=names,
    )
    (legend,) = figure.legends
    # ground truth has 0, 3, 9 (11 is ignored); the prediction adds 8
    assert [text.get_text() for text in legend.get_texts()] == [
        "class 0",
        "class 3",
        "class 8",
        "class 9",
    ]
    with pytest.raises(ValueError, match="class_names has 2 names for 11 classes"):
        segmentation_panels(
            data["image"],
            {"MCP": (data["prediction"], data["confidence"])},
            num_classes=11,
            class_names=["a", "b"],
        )
