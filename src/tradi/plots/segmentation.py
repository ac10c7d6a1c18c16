"""Segmentation figure: the image, each method's prediction and per-pixel confidence map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch
from torch import Tensor

from tradi.plots._figure import check_methods, panel_grid

OOD_OUTLINE_COLOR = "magenta"
CONFIDENCE_CMAP = "viridis"


def _display_image(image: Tensor) -> np.ndarray:
    """[3, H, W], [H, W, 3] or [H, W] to an array imshow shows as is: uint8 stays, floats are
    rescaled to [0, 1] (inputs are often normalised with a mean and std)."""
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.movedim(0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be [3, H, W], [H, W, 3] or [H, W], got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.numpy(force=True)
    image = image.double()
    span = (image.max() - image.min()).clamp_min(1e-12)
    return ((image - image.min()) / span).numpy(force=True)


def _label_colormap(
    num_classes: int, class_colors: Sequence[str] | None
) -> tuple[ListedColormap, BoundaryNorm]:
    colors = (
        list(class_colors)
        if class_colors is not None
        else [matplotlib.colormaps["tab20"](index % 20) for index in range(num_classes)]
    )
    if len(colors) != num_classes:
        raise ValueError(f"class_colors has {len(colors)} colours for {num_classes} classes")
    # pixels outside [0, num_classes) (ignored, unlabelled) are masked and drawn black
    colormap = ListedColormap(colors).with_extremes(bad="black")
    return colormap, BoundaryNorm(np.arange(num_classes + 1) - 0.5, num_classes)


def _label_map(labels: Tensor, num_classes: int) -> np.ma.MaskedArray:
    array = labels.numpy(force=True)
    return np.ma.masked_where((array < 0) | (array >= num_classes), array)


def _outline(axis: Axes, ood_mask: Tensor | None) -> None:
    if ood_mask is not None and ood_mask.any():
        axis.contour(
            ood_mask.double().numpy(force=True),
            levels=[0.5],
            colors=OOD_OUTLINE_COLOR,
            linewidths=1.0,
        )


def _class_legend(
    figure: Figure,
    class_names: Sequence[str],
    colormap: ListedColormap,
    label_maps: Sequence[Tensor],
    num_classes: int,
) -> None:
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    shown = torch.cat([labels.reshape(-1) for labels in label_maps]).unique().tolist()
    handles = [
        Patch(color=colormap(index), label=class_names[index])
        for index in shown
        if 0 <= index < num_classes
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize="small"
    )


def _check_predictions(predictions: Mapping[str, tuple[Tensor, Tensor]]) -> None:
    check_methods(predictions, "predictions")
    for name, (predicted, confidence) in predictions.items():
        if predicted.shape != confidence.shape or predicted.ndim != 2:
            raise ValueError(
                f"{name}: prediction {tuple(predicted.shape)} and confidence "
                f"{tuple(confidence.shape)} must both be [H, W]"
            )


def _draw_labels(
    axis: Axes, labels: Tensor, num_classes: int, colormap: ListedColormap, norm: BoundaryNorm
) -> None:
    axis.imshow(_label_map(labels, num_classes), cmap=colormap, norm=norm, interpolation="nearest")


def _draw_methods(
    axes: Sequence[Sequence[Axes]],
    predictions: Mapping[str, tuple[Tensor, Tensor]],
    num_classes: int,
    colormap: ListedColormap,
    norm: BoundaryNorm,
) -> AxesImage:
    """Each method's predicted classes (top) and confidence map (bottom, 0..1) in the panels
    after the first; returns the last confidence image (for the shared colour bar)."""
    confidence_image = None
    for panel, (name, (predicted, confidence)) in enumerate(predictions.items(), start=1):
        _draw_labels(axes[panel][0], predicted, num_classes, colormap, norm)
        axes[panel][0].set_title(f"{name}: prediction")
        confidence_image = axes[panel][1].imshow(
            confidence.double().numpy(force=True),
            cmap=CONFIDENCE_CMAP,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        axes[panel][1].set_title(f"{name}: confidence")
    assert confidence_image is not None  # check_methods: at least one method
    return confidence_image


def segmentation_panels(
    image: Tensor,
    predictions: Mapping[str, tuple[Tensor, Tensor]],
    num_classes: int,
    ground_truth: Tensor | None = None,
    ood_mask: Tensor | None = None,
    class_colors: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Panel 0: the image (top) and the ground truth (bottom, if given); then one panel per
    method with its predicted classes [H, W] (top) and confidence map [H, W] (bottom, 0..1,
    one shared colour bar); panels wrap after four per row. Labels outside [0, num_classes)
    are drawn black; the OOD mask [H, W] is outlined on every panel; `class_names` adds a
    legend of the classes shown. Raises TypeError / ValueError for an empty or non-mapping
    ``predictions``, a prediction and confidence of different shapes or not [H, W], an image
    of another shape, or `class_colors` / `class_names` not of ``num_classes`` entries."""
    _check_predictions(predictions)
    colormap, norm = _label_colormap(num_classes, class_colors)
    figure, axes = panel_grid(1 + len(predictions), (3.0, 2.6), rows_per_panel=2)
    axes[0][0].imshow(_display_image(image))
    axes[0][0].set_title("image")
    if ground_truth is None:
        axes[0][1].set_visible(False)
    else:
        _draw_labels(axes[0][1], ground_truth, num_classes, colormap, norm)
        axes[0][1].set_title("ground truth")
    confidence_image = _draw_methods(axes, predictions, num_classes, colormap, norm)
    for axis in (axis for row in axes for axis in row if axis.get_visible()):
        _outline(axis, ood_mask)
        axis.set_axis_off()
    if class_names is not None:
        shown = [gt for gt in (ground_truth,) if gt is not None]
        shown += [predicted for predicted, _ in predictions.values()]
        _class_legend(figure, class_names, colormap, shown, num_classes)
    figure.colorbar(
        confidence_image, ax=[stack[1] for stack in axes], label="confidence", shrink=0.6
    )
    return figure
