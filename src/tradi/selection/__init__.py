"""Choosing a posterior's noise scale on validation data, and the one-call `fit_ensemble` built on it."""

from tradi.selection.fit import fit_ensemble
from tradi.selection.rules import (
    RULES,
    Rule,
    ScalePoint,
    ScaleSearch,
    ScaleSelection,
    scale_search_from_dict,
)
from tradi.selection.search import network_predict, score, search_scale

__all__ = [
    "RULES",
    "Rule",
    "ScalePoint",
    "ScaleSearch",
    "ScaleSelection",
    "fit_ensemble",
    "network_predict",
    "scale_search_from_dict",
    "score",
    "search_scale",
]
