"""OOD-detection criteria by the field's names, in one registry (`OOD_SCORES`).

The names are TorchUncertainty's (``msp``, ``logit``, ``energy``, ``entropy``,
``mutual_information``, ``variation_ratio``), plus ``ensemble_energy`` (Xia & Bouganis 2022) and
``variance`` (tradi's earlier score). Sign convention: EVERY score comes back oriented
"higher = more in-distribution", so `tradi.metrics.ood_metrics` takes any of them unchanged.
The uncertainties (entropy, mutual information, variation ratio, variance) are therefore
returned NEGATED (``ScoreSpec.negated``); the confidences (msp, logit, energy, ensemble_energy)
as they are. TorchUncertainty's criteria return the opposite sign (higher = more OOD).

Inputs are samples first, classes at dim 2: ``sample_logits`` / ``sample_probs`` [S, N, C] or
[S, N, C, H, W] (a single network is S = 1). z_s are sample s's logits, p_s = softmax(z_s) its
probabilities, p = mean_s p_s the averaged prediction (TRADI eq. 6), H the entropy in nats:

    msp                 max_c p_c                          MCP / maximum softmax probability
    logit               max_c mean_s z_{s,c}               MaxLogit
    energy              logsumexp_c mean_s z_{s,c}         -E(x) at T = 1 of the averaged logits
    ensemble_energy     mean_s logsumexp_c z_{s,c}         the members' -E(x) averaged
    entropy             -H[p]
    mutual_information  -(H[p] - mean_s H[p_s])
    variation_ratio     -(1 - #(samples voting the modal class) / S)
    variance            -mean_c Var_s[p_{s,c}]

Sources: msp, Hendrycks & Gimpel 2017 (the TRADI paper's MCP); logit, Hendrycks et al. 2022
("Scaling OOD detection", MaxLogit); energy, Liu et al. 2020 (energy score with T = 1), both of
the member-averaged logits as in TorchUncertainty; ensemble_energy, Xia & Bouganis 2022 (the
average of the members' energies, the best of their scores for Deep Ensembles); entropy, the
predictive entropy (Gal 2016, thesis 3.3.1); mutual information, Houlsby et al. 2011 (BALD),
Depeweg et al. 2018; variation ratio, Freeman 1965, Gal 2016; variance, the mean per-class variance
of the samples (Kendall et al. 2017, Bayesian SegNet). By Jensen (logsumexp is convex)
ensemble_energy >= energy, equal for S = 1.

Decision, entropy: TorchUncertainty's ``EntropyCriterion`` (commit 2b72995) averages the members'
entropies (the expected entropy, mean_s H[p_s]); ``entropy`` here is the entropy of the averaged
prediction (the total uncertainty of H[p] = MI + mean_s H[p_s], tradi's earlier ``neg_entropy``).
The two agree for a single network.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

from torch import Tensor

from tradi.metrics.scores import (
    _mutual_information,
    _sampled_variance,
    _variation_ratio,
    check_sample_logits,
    check_sample_probs,
    predictive_entropy,
)

Needs = Literal["logits", "probs"]
_V = TypeVar("_V")


class Predictions:
    """Checked per-sample predictions, with the means the criteria share computed once.

    ``logits``: [S, N, C, *] or None; ``probs``: [S, N, C, *] (softmax of the logits when only
    those were given). Build with `predictions`."""

    def __init__(self, logits: Tensor | None, probs: Tensor) -> None:
        self.logits = logits
        self.probs = probs

    @cached_property
    def mean_probs(self) -> Tensor:
        """The averaged prediction p [N, C, *]."""
        return self.probs.mean(dim=0)

    @cached_property
    def mean_logits(self) -> Tensor:
        """mean_s z_s [N, C, *]; only when logits were given."""
        assert self.logits is not None
        return self.logits.mean(dim=0)

    @property
    def votes(self) -> Tensor:
        """Each sample's argmax class [S, N, *], from the logits when given (no ties from
        saturated probabilities), else from the probabilities."""
        return (self.logits if self.logits is not None else self.probs).argmax(dim=2)


@dataclass(frozen=True)
class ScoreSpec:
    """One OOD criterion of `OOD_SCORES`.

    ``needs``: "logits" (needs ``sample_logits``) or "probs" (either input will do).
    ``ensemble_only``: constant (0) for a single sample, S = 1: it ranks nothing then.
    ``negated``: returned as minus the named uncertainty so that higher = more in-distribution.
    ``formula`` and ``source``: what it computes and where it comes from (module docstring)."""

    name: str
    needs: Needs
    ensemble_only: bool
    negated: bool
    formula: str
    source: str
    compute: Callable[[Predictions], Tensor] = field(repr=False, compare=False)


def _spec(name: str, needs: Needs, formula: str, source: str, **flags: bool) -> ScoreSpec:
    return ScoreSpec(
        name,
        needs,
        flags.get("ensemble_only", False),
        flags.get("negated", False),
        formula,
        source,
        _COMPUTE[name],
    )


_COMPUTE: dict[str, Callable[[Predictions], Tensor]] = {
    "msp": lambda p: p.mean_probs.max(dim=1).values,
    "logit": lambda p: p.mean_logits.max(dim=1).values,
    "energy": lambda p: p.mean_logits.logsumexp(dim=1),
    "ensemble_energy": lambda p: p.logits.logsumexp(dim=2).mean(dim=0),  # type: ignore[union-attr]
    "entropy": lambda p: -predictive_entropy(p.mean_probs),
    "mutual_information": lambda p: -_mutual_information(p.probs),
    "variation_ratio": lambda p: -_variation_ratio(p.votes, p.probs.dtype),
    "variance": lambda p: -_sampled_variance(p.probs),
}

#: Every criterion by name, in the order `evaluate` reports them.
OOD_SCORES: dict[str, ScoreSpec] = {
    spec.name: spec
    for spec in (
        _spec("msp", "probs", "max_c p_c", "Hendrycks & Gimpel 2017; TRADI's MCP"),
        _spec("logit", "logits", "max_c mean_s z_sc", "Hendrycks et al. 2022 (MaxLogit)"),
        _spec("energy", "logits", "logsumexp_c mean_s z_sc", "Liu et al. 2020, T = 1"),
        _spec("ensemble_energy", "logits", "mean_s logsumexp_c z_sc", "Xia & Bouganis 2022"),
        _spec("entropy", "probs", "-H[p]", "predictive entropy, Gal 2016", negated=True),
        _spec(
            "mutual_information",
            "probs",
            "-(H[p] - mean_s H[p_s])",
            "Houlsby et al. 2011; Depeweg et al. 2018",
            ensemble_only=True,
            negated=True,
        ),
        _spec(
            "variation_ratio",
            "probs",
            "-(1 - modal count / S)",
            "Freeman 1965; Gal 2016",
            ensemble_only=True,
            negated=True,
        ),
        _spec(
            "variance",
            "probs",
            "-mean_c Var_s[p_sc]",
            "Kendall et al. 2017",
            ensemble_only=True,
            negated=True,
        ),
    )
}

#: tradi's earlier score names -> their names now (same values, same orientation). ``mcp`` is
#: the TRADI paper's name for ``msp`` and stays a plain alias; the ``neg_*`` names are
#: deprecated (a DeprecationWarning on use).
SCORE_ALIASES: dict[str, str] = {
    "mcp": "msp",
    "neg_entropy": "entropy",
    "neg_mutual_information": "mutual_information",
    "neg_variance": "variance",
}
_DEPRECATED = frozenset(alias for alias in SCORE_ALIASES if alias.startswith("neg_"))


def resolve_score_name(name: str) -> str:
    """The registry name of ``name`` (itself, or what an alias of `SCORE_ALIASES` stands for).

    Raises ValueError for an unknown name, listing the known ones. Warns (DeprecationWarning)
    for a deprecated alias."""
    if name in OOD_SCORES:
        return name
    if name in SCORE_ALIASES:
        if name in _DEPRECATED:
            warnings.warn(
                f"score name {name!r} is deprecated: use {SCORE_ALIASES[name]!r} (same values, "
                "still higher = more in-distribution)",
                DeprecationWarning,
                stacklevel=3,
            )
        return SCORE_ALIASES[name]
    raise ValueError(f"unknown OOD score {name!r}: choose among {', '.join(OOD_SCORES)}")


def available_scores(has_logits: bool) -> tuple[str, ...]:
    """The names of every criterion the inputs allow: all with logits, else the "probs" ones."""
    return tuple(n for n, spec in OOD_SCORES.items() if has_logits or spec.needs == "probs")


class ScoreDict(dict[str, _V], Generic[_V]):
    """A plain dict keyed by score name (scores, or `evaluate`'s OOD figures per score) in which
    an old name of `SCORE_ALIASES` still reads its entry (``d["mcp"]`` is ``d["msp"]``), and
    ``in`` and ``get`` know it too; iteration and ``keys()`` give only the registry names."""

    def __missing__(self, key: str) -> _V:
        name = SCORE_ALIASES.get(key)
        if name is None or not dict.__contains__(self, name):
            raise KeyError(key)
        return self[resolve_score_name(key)]

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        name = SCORE_ALIASES.get(key) if isinstance(key, str) else None
        return name is not None and dict.__contains__(self, name)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this method)


def predictions(
    sample_logits: Tensor | None = None, sample_probs: Tensor | None = None
) -> Predictions:
    """Check the inputs of the criteria: logits and/or probabilities [S, N, C, *].

    With logits only, the probabilities are their softmax over dim 2; with both, each is used as
    given (e.g. probabilities of a calibrated head) and their shapes must agree. Raises
    ValueError when neither is given or the shapes differ, else as
    `tradi.metrics.scores.check_sample_logits` / `check_sample_probs`."""
    if sample_logits is None and sample_probs is None:
        raise ValueError("pass sample_logits or sample_probs ([S, N, C] or [S, N, C, H, W])")
    logits = None if sample_logits is None else check_sample_logits(sample_logits)
    if sample_probs is None:
        assert logits is not None
        return Predictions(logits, logits.softmax(dim=2))
    probs = check_sample_probs(sample_probs)
    if logits is not None and logits.shape != probs.shape:
        raise ValueError(
            f"sample_logits {tuple(logits.shape)} and sample_probs {tuple(probs.shape)} must "
            "have the same shape"
        )
    return Predictions(logits, probs)


def score_spec(name: str, has_logits: bool = True) -> ScoreSpec:
    """The `ScoreSpec` of ``name`` (aliases resolved). Raises ValueError for an unknown name,
    or for a criterion that needs logits when ``has_logits`` is False."""
    spec = OOD_SCORES[resolve_score_name(name)]
    return _usable(spec, has_logits)


def _usable(spec: ScoreSpec, has_logits: bool) -> ScoreSpec:
    if spec.needs == "logits" and not has_logits:
        raise ValueError(
            f"OOD score {spec.name!r} needs logits ({spec.formula}) and only probabilities were "
            "given: pass sample_logits (an ensemble's sample_logits(x)), or choose among "
            f"{', '.join(available_scores(False))}"
        )
    return spec


def ood_scores(
    names: Iterable[str] | None = None,
    sample_logits: Tensor | None = None,
    sample_probs: Tensor | None = None,
) -> ScoreDict[Tensor]:
    """Several criteria of `OOD_SCORES` at once (the shared means computed once).

    ``names``: registry names or aliases (None: every criterion the inputs allow,
    `available_scores`). Inputs and errors as `ood_score`. Returns a `ScoreDict` keyed by
    registry name, each [N] or [N, H, W], higher = more in-distribution."""
    return score_predictions(predictions(sample_logits, sample_probs), names)


def score_predictions(inputs: Predictions, names: Iterable[str] | None = None) -> ScoreDict[Tensor]:
    """`ood_scores` on inputs already checked by `predictions` (e.g. to reuse their
    ``mean_probs``)."""
    has_logits = inputs.logits is not None
    chosen = available_scores(has_logits) if names is None else names
    specs = [_usable(OOD_SCORES[resolve_score_name(name)], has_logits) for name in chosen]
    return ScoreDict((spec.name, spec.compute(inputs)) for spec in specs)


def ood_score(
    name: str, sample_logits: Tensor | None = None, sample_probs: Tensor | None = None
) -> Tensor:
    """The OOD criterion ``name`` of `OOD_SCORES`, higher = more in-distribution.

    ``sample_logits`` / ``sample_probs``: [S, N, C] or [S, N, C, H, W], samples first (a single
    network: ``.unsqueeze(0)``); float16 / bfloat16 computed in float32. Returns [N] or
    [N, H, W] (float32 for half input, else the input's dtype).

    Raises ValueError for an unknown name, a criterion needing logits given probabilities only,
    no input, mismatched shapes, probabilities not summing to 1, NaN or infinite logits;
    TypeError for a non-float tensor. Definitions and sources: the module docstring."""
    name = resolve_score_name(name)
    return ood_scores((name,), sample_logits, sample_probs)[name]


def uncertainty_scores(sample_probs: Tensor) -> ScoreDict[Tensor]:
    """Every probability criterion (msp, entropy, mutual_information, variation_ratio,
    variance) of [S, N, C, *] probabilities, each [N, *], higher = more in-distribution. Kept
    from before the registry: the old keys (mcp, neg_entropy, ...) still read (`ScoreDict`)."""
    return ood_scores(None, sample_probs=sample_probs)
