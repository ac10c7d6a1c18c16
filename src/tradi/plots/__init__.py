"""Figures of calibration and OOD detection (matplotlib Figures built without pyplot).

Every function takes {method name: data}, returns a `matplotlib.figure.Figure`, and draws the
methods in the order given with the same colour in every figure; `save_figure(fig, path)`
writes `path.png` and `path.svg`.

    reliability_diagram({name: CalibrationBins})             Guo et al. 2017, with histogram
    ood_curves({name: (scores_in, scores_out)})               ROC, PR-in, PR-out
    confidence_histograms({name: (scores_in, scores_out)})    score distributions in vs. OOD
    segmentation_panels(image, {name: (prediction, confidence)}, num_classes, ...)
"""

from tradi.plots._figure import save_figure
from tradi.plots.calibration import reliability_diagram
from tradi.plots.ood import confidence_histograms, ood_curves
from tradi.plots.segmentation import segmentation_panels

__all__ = [
    "confidence_histograms",
    "ood_curves",
    "reliability_diagram",
    "save_figure",
    "segmentation_panels",
]
