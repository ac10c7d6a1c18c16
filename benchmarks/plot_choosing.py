"""The figure of docs/choosing.md: cost against quality of every method on MNIST vs notMNIST.

    python benchmarks/plot_choosing.py            # writes docs/img/choosing-cost-quality.png

No measurement is made here: the numbers are copied from two tables that name their commands,
so that the figure can be regenerated and checked against them.

- Quality (mean over seeds 0, 1, 2; the noise scales chosen against the declared validation OOD
  set Fashion-MNIST): docs/experiments.md, "All six methods, seeds 0, 1, 2",
  `tradi reproduce mnist-notmnist` with `scale_selection.rule=ood_auroc`.
- Cost relative to MCP (CPU time of one process, the same MLP and recipe on 12,800 training
  images for 2 epochs, each method trained alone): docs/benchmarks.md, "Method cost on
  mnist-notmnist", `make bench` (`method_times_mnist_notmnist` in benchmarks/results.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: method: (train time / MCP, test time / MCP, AUROC %, ECE), from the tables above
POINTS: dict[str, tuple[float, float, float, float]] = {
    "MCP": (1.00, 1.0, 94.7, 0.0302),
    "MC Dropout": (1.12, 13.7, 94.8, 0.0352),
    "Deep Ensembles (5)": (5.11, 2.5, 97.6, 0.0339),
    "SWAG": (1.08, 13.8, 95.2, 0.0302),
    "Gaussian perturbation": (1.10, 8.9, 94.6, 0.0390),
    "TRADI": (1.17, 9.6, 97.7, 0.0394),
}


def plot(out: Path) -> None:
    """Two panels, training cost and test cost (× MCP, log axis) against the OOD AUROC; each
    point coloured by method, its ECE in the legend. Writes a PNG (~50 KB) to ``out``."""
    from matplotlib.figure import Figure  # no pyplot: no display needed
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure = Figure(figsize=(10.0, 3.6), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for axis, column, label in ((axes[0], 0, "training"), (axes[1], 1, "test")):
        for index, (name, point) in enumerate(POINTS.items()):
            axis.scatter(
                point[column], point[2], color=f"C{index}", label=f"{name}, ECE {point[3]:.4f}"
            )
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xticks([1, 2, 5, 10] if column else [1, 2, 5])
        axis.set_xlabel(f"{label} time × MCP's (log scale)")
        axis.grid(alpha=0.3)
    figure.legend(
        *axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small"
    )
    axes[0].set_ylabel("OOD AUROC % (MNIST vs notMNIST)")
    axes[0].set_ylim(94.0, 98.5)
    figure.suptitle("Cost against OOD quality, the paper's MLP (seeds 0-2; costs: make bench)")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "img" / "choosing-cost-quality.png"
    parser.add_argument("--out", type=Path, default=default)
    plot(parser.parse_args().out)
