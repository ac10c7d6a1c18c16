"""Figure creation and saving without pyplot, so plotting never touches global state and works
on headless machines (PNG through Agg, SVG through matplotlib's SVG backend)."""

from __future__ import annotations

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
