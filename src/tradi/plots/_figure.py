"""Figure creation and saving without pyplot, so plotting never touches global state and works
on headless machines (PNG through Agg, SVG through matplotlib's SVG backend)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: One colour per method, in the order the methods are given, the same in every figure.
METHOD_COLORS = matplotlib.colormaps["tab10"].colors


def method_color(index: int) -> tuple[float, float, float]:
    return METHOD_COLORS[index % len(METHOD_COLORS)]


def new_figure(
    n_rows: int, n_cols: int, panel_size: tuple[float, float]
) -> tuple[Figure, list[list[Axes]]]:
    """A Figure with a grid of axes (always 2-D lists), sized per panel."""
    figure = Figure(figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    return figure, [list(row) for row in axes]


#: Panels per row before a figure wraps: wide strips of 7 panels (8:1) read badly.
MAX_COLUMNS = 4


def panel_grid(
    n_panels: int,
    panel_size: tuple[float, float],
    rows_per_panel: int = 1,
    title: str | None = None,
) -> tuple[Figure, list[list[Axes]]]:
    """``n_panels`` panels wrapped into rows of at most `MAX_COLUMNS`, each panel a stack of
    ``rows_per_panel`` axes; returns the figure and, per panel, its axes from top to bottom.
    Grid cells left over in the last row are removed; ``title`` goes above the grid."""
    columns = min(n_panels, MAX_COLUMNS)
    grid_rows = math.ceil(n_panels / columns)
    figure, axes = new_figure(grid_rows * rows_per_panel, columns, panel_size)
    cells = [divmod(index, columns) for index in range(grid_rows * columns)]
    stacks = [
        [axes[row * rows_per_panel + k][col] for k in range(rows_per_panel)] for row, col in cells
    ]
    for unused in stacks[n_panels:]:
        for axis in unused:
            figure.delaxes(axis)
    if title:
        figure.suptitle(title)
    return figure, stacks[:n_panels]


def check_methods(data: object, what: str) -> None:
    if not isinstance(data, dict) and not hasattr(data, "items"):
        raise TypeError(
            f"{what} must be a mapping {{method name: data}}, got {type(data).__name__}"
        )
    if len(data) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{what} is empty: give at least one method")


def save_figure(figure: Figure, path_without_ext: str | Path, dpi: int = 150) -> tuple[Path, Path]:
    """Write `<path>.png` and `<path>.svg`, creating folders; returns both paths."""
    base = Path(path_without_ext)
    if base.suffix.lower() in (".png", ".svg", ".pdf"):
        raise ValueError(f"give the path without extension, got {base}")
    base.parent.mkdir(parents=True, exist_ok=True)
    png, svg = Path(f"{base}.png"), Path(f"{base}.svg")
    figure.savefig(png, dpi=dpi)
    figure.savefig(svg)
    return png, svg
