"""Every OOD score through the runner (issue 21): each method's logits, every score's metrics
against scikit-learn on scores recomputed in NumPy, the streamed segmentation path within its
binning bound, the config key and the report's tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score
from torch import Tensor

from tradi.data import Benchmark, TensorSplit
from tradi.experiments.config import ConfigError, config_from_dict
from tradi.experiments.evaluation import evaluate, predictor
from tradi.experiments.loaders import TensorBatches
from tradi.experiments.report import report_markdown
from tradi.experiments.summary import closing_text
from tradi.experiments.tables import flat_rows, summarize
from tradi.methods import MCP, Method, build_method
from tradi.metrics import OOD_SCORES
from tradi.metrics.ood_scores import predictions
from tradi.models import build_model

#: Classification metrics are exact (sort-based) on every test score: they differ from the
#: float64 recomputation only where float32 rounding ties (or unties) an in/out pair, which
#: `_tie_tolerance` bounds; plus this for the sums.
EXACT = 1e-9
#: Relative distance below which two float32 scores may round to a tie (a few float32 ulps).
NEAR_TIE = 1e-6


def numpy_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Every criterion of `OOD_SCORES` from logits [S, N, C, *] in NumPy (float64), written
    from the definitions in docs/ood-scores.md, higher = more in-distribution."""
    z = logits.astype(np.float64)
    p_s = softmax(z, axis=2)
    p = p_s.mean(axis=0)

    def entropy(q: np.ndarray, axis: int) -> np.ndarray:
        return -(q * np.log(np.clip(q, 1e-300, None))).sum(axis=axis)

    votes = z.argmax(axis=2)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(z.shape[2])])
    return {
        "msp": p.max(axis=1),
        "logit": z.mean(axis=0).max(axis=1),
        "energy": logsumexp(z.mean(axis=0), axis=1),
        "ensemble_energy": logsumexp(z, axis=2).mean(axis=0),
        "entropy": -entropy(p, 1),
        "mutual_information": -(entropy(p, 1) - entropy(p_s, 2).mean(axis=0)),
        "variation_ratio": -(1 - counts.max(axis=0) / z.shape[0]),
        "variance": -p_s.var(axis=0).mean(axis=1),
    }


def _sklearn_auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """In-distribution positive (AUROC does not depend on it)."""
    labels = np.r_[np.ones(scores_in.size), np.zeros(scores_out.size)]
    return float(roc_auc_score(labels, np.r_[scores_in.ravel(), scores_out.ravel()]))


def _tie_tolerance(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """Bound on |AUROC(float32 scores) - AUROC(float64 scores)|: each in/out pair closer than
    ``NEAR_TIE`` (relative) but not equal may be a tie in one and ordered in the other, 0.5 of
    AUROC's pair count each."""
    a, b = scores_in.ravel()[:, None], scores_out.ravel()[None, :]
    close = np.abs(a - b) <= NEAR_TIE * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    near = close & (a != b)  # an exact tie (variation ratio's k / S) is one in both
    return 0.5 * float(near.sum()) / near.size + EXACT


@pytest.fixture(scope="module")
def bench(blobs: Callable[..., Benchmark]) -> Benchmark:
    return blobs(with_ood_val=False, ood_shift=-1.5, far_ood_shift=3.0)


_METHODS = {
    "mcp": {},
    "temperature_scaling": {},
    "mc_dropout": {"n_passes": 5},
    "deep_ensembles": {"n_members": 2},
    "tradi": {"scale": 30.0, "n_samples": 4},
}


def _trained(name: str, bench: Benchmark) -> Method:
    factory = partial(build_model, "mlp", 3, (1, 2, 2), hidden_features=[16, 16], dropout=0.2)
    train = {"epochs": 2, "lr": 0.01, "progress": False, "seed": 0}
    method = build_method(name, factory, train=train, **_METHODS[name])
    method.fit(TensorBatches(bench.train, 32, shuffle=True), TensorBatches(bench.val, 45))
    return method


@pytest.mark.parametrize("name", list(_METHODS))
def test_every_score_matches_sklearn_on_numpy_scores(name: str, bench: Benchmark) -> None:
    method = _trained(name, bench)
    assert method.gives_logits
    loaders = [TensorBatches(s, 64) for s in (bench.test, bench.ood_test, bench.far_ood_test)]
    evaluation = evaluate(partial(predictor, method), bench, *loaders)
    logits = [torch.cat(list(method.iter_outputs(loader, "logits")), dim=1) for loader in loaders]
    probs = torch.cat(list(method.iter_predict(loaders[0])), dim=1)
    torch.testing.assert_close(logits[0].softmax(dim=2), probs)  # the same draws, softmaxed
    s = method.forward_passes_per_input
    assert logits[0].shape == (s, 150, 3)
    scores = [numpy_scores(z.numpy()) for z in logits]
    expected = [n for n, spec in OOD_SCORES.items() if s > 1 or not spec.ensemble_only]
    assert list(evaluation.ood_scores) == expected
    assert list(evaluation.far_ood_scores) == expected
    assert set(evaluation.ood_left_out) == set(OOD_SCORES) - set(expected)
    for score in expected:
        for result, other in ((evaluation.ood_scores, 1), (evaluation.far_ood_scores, 2)):
            exact = _sklearn_auroc(scores[0][score], scores[other][score])
            tolerance = _tie_tolerance(scores[0][score], scores[other][score])
            assert tolerance < 0.01, score  # the comparison means something
            assert result[score]["auroc"] == pytest.approx(exact, abs=tolerance), score
    assert evaluation.metrics["auroc"] == evaluation.ood_scores["msp"]["auroc"]
    assert evaluation.metrics["far_auroc"] == evaluation.far_ood_scores["msp"]["auroc"]


def test_temperature_scaling_logits_are_the_network_logits_over_t(bench: Benchmark) -> None:
    method = _trained("temperature_scaling", bench)
    x = bench.test.x[:20]
    with torch.no_grad():
        network = method.model.eval()(x)  # type: ignore[union-attr]
    torch.testing.assert_close(method.sample_logits(x)[0], network / method.temperature)


def test_the_noise_scale_rows_score_the_ensemble_logits(bench: Benchmark) -> None:
    method = _trained("tradi", bench)
    loaders = [TensorBatches(s, 64) for s in (bench.test, bench.ood_test)]
    evaluation = evaluate(partial(predictor, method, 3.0), bench, *loaders)
    ensemble = method.ensemble(3.0)
    scores = [
        numpy_scores(ensemble.sample_logits(s.x).numpy()) for s in (bench.test, bench.ood_test)
    ]
    for score in OOD_SCORES:
        auroc = _sklearn_auroc(scores[0][score], scores[1][score])
        tolerance = _tie_tolerance(scores[0][score], scores[1][score])
        assert evaluation.ood_scores[score]["auroc"] == pytest.approx(auroc, abs=tolerance)


class _ProbsOnly(MCP):
    """A method that gives probabilities only (``sample_probs`` without ``sample_logits``)."""

    sample_logits = Method.sample_logits  # type: ignore[assignment]

    def sample_probs(self, x: Any) -> Tensor:
        return torch.stack([x.flatten(1)[:, :3].softmax(dim=1), x.flatten(1)[:, 1:].softmax(1)])


def test_a_method_without_logits_is_scored_on_probabilities(bench: Benchmark) -> None:
    method = _ProbsOnly(lambda: torch.nn.Identity())
    assert not method.gives_logits
    with pytest.raises(NotImplementedError, match="gives probabilities only"):
        method.sample_logits(bench.test.x)
    loaders = [TensorBatches(s, 64) for s in (bench.test, bench.ood_test)]
    evaluation = evaluate(partial(predictor, method), bench, *loaders)
    probability_scores = [n for n, spec in OOD_SCORES.items() if spec.needs == "probs"]
    assert list(evaluation.ood_scores) == probability_scores
    assert evaluation.ood_left_out == {
        n: "needs logits: the method gives probabilities only"
        for n, spec in OOD_SCORES.items()
        if spec.needs == "logits"
    }


def test_streamed_segmentation_scores_match_sklearn_within_the_binning_bound() -> None:
    generator = torch.Generator().manual_seed(0)
    n, classes, ood_label, ignore, samples = 8, 4, 4, 255, 3
    labels = torch.randint(0, classes + 1, (n, 12, 10), generator=generator)
    labels[:, 0, :3] = ignore
    is_ood = (labels == ood_label).unsqueeze(1)
    # OOD pixels get flatter, more disagreeing logits; some logits negative, energies of both signs
    logits = 4 * torch.randn(samples, n, classes, 12, 10, generator=generator) - 2
    logits = torch.where(is_ood.unsqueeze(0), 0.4 * logits, logits)
    split = TensorSplit(torch.zeros(n, 1, 12, 10), labels)
    bench = Benchmark(
        name="seg",
        task="segmentation",
        train=split,
        val=split,
        test=split,
        ood_test=None,
        ood_val=None,
        num_classes=classes,
        input_shape=(1, 12, 10),
        class_names=tuple("abcd"),
        ignore_index=ignore,
        ood_label=ood_label,
    )
    batches = [(split.x[i : i + 3], labels[i : i + 3]) for i in range(0, n, 3)]

    def make_predictor() -> Any:
        def predict(loader: Iterable[Any]) -> Iterator[Any]:
            for i in range(0, n, 3):
                yield predictions(sample_logits=logits[:, i : i + 3])

        return predict

    evaluation = evaluate(make_predictor, bench, batches, None)
    scores = numpy_scores(logits.numpy())
    inside, outside = (labels != ignore) & (labels != ood_label), labels == ood_label
    assert list(evaluation.ood_scores) == list(OOD_SCORES)
    for score, values in scores.items():
        exact = _sklearn_auroc(values[inside.numpy()], values[outside.numpy()])
        bound = evaluation.ood_bounds[score]["auroc"]
        if score != "variation_ratio":  # 3 values: its ties share bins, and count 0.5 both ways
            assert bound < 1e-3, score  # the bins resolve these scores: the check means something
        tolerance = bound + _tie_tolerance(values[inside.numpy()], values[outside.numpy()])
        assert evaluation.ood_scores[score]["auroc"] == pytest.approx(exact, abs=tolerance)
    assert evaluation.metrics["auroc"] == evaluation.ood_scores["msp"]["auroc"]


def test_an_unknown_ood_score_in_a_config_is_refused_with_the_names(
    tiny_config: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({**tiny_config, "ood_score": "maxlogit"})
    message = str(error.value)
    assert message.startswith("ood_score: unknown OOD score 'maxlogit'; choose one of")
    for name in OOD_SCORES:
        assert name in message
    assert config_from_dict(tiny_config).ood_score == "msp"
    assert config_from_dict({**tiny_config, "ood_score": "energy"}).ood_score == "energy"


def _results(tiny_config: dict[str, Any], score: str) -> dict[str, Any]:
    """Two seeds of one row whose per-score metrics differ from its top-level (msp) ones."""

    def row(seed: int) -> dict[str, Any]:
        per_score = {
            name: {"auroc": 0.5 + 0.05 * i + 0.01 * seed, "aupr_in": 0.6, "aupr_out": 0.4}
            | {"fpr95_tpr_in": 0.3, "fpr95_tpr_out": 0.2}
            for i, name in enumerate(("msp", "logit", "energy", "entropy"))
        }
        metrics = {"accuracy": 0.9, "nll": 0.3, "ece": 0.05, **per_score["msp"]}
        return {
            "key": "mcp",
            "label": "Baseline (MCP)",
            "scale": None,
            "scale_source": None,
            "forward_passes": 1,
            "test_seconds": 0.1,
            "build_seconds": 0.0,
            "metrics": metrics,
            "ood_scores": per_score,
            "ood_scores_left_out": {},
        }

    config = config_from_dict({**tiny_config, "ood_score": score}).to_dict()
    pairs = [
        {"method": "mcp", "seed": s, "train_seconds": 1.0, "selection_seconds": 0.0}
        | {"scale_selection": None, "rows": [row(s)]}
        for s in (0, 1)
    ]
    results = {"config": config, "command": "", "seeds": [0, 1], "versions": {}, "pairs": pairs}
    results["benchmark"] = {"task": "classification", "input_shape": [1, 2, 2]}
    return {**results, "summary": summarize(results)}


def test_the_tables_show_the_configured_score_and_every_score_s_auroc(
    tiny_config: dict[str, Any],
) -> None:
    results = _results(tiny_config, "energy")
    assert [r["auroc"] for r in flat_rows(results)] == [0.6, 0.61]
    assert flat_rows(results)[0]["auroc[logit]"] == 0.55
    stats = results["summary"]["mcp"]["stats"]
    assert stats["auroc"]["mean"] == pytest.approx(0.605, abs=1e-12)
    report = report_markdown(results, [])
    assert "Score (config `ood_score`, default `msp`): `energy`" in report
    assert "| method | `msp` | `logit` | `energy` | `entropy` |" in report
    assert "| Baseline (MCP) | 50.5 ± 0.7 | 55.5 ± 0.7 | 60.5 ± 0.7 | 65.5 ± 0.7 |" in report
    assert "60.5" in report.split("## OOD scores")[0]  # the main table: energy's AUROC
    assert "OOD score 'energy'" in closing_text(results, Path("out"))
    default = _results(tiny_config, "msp")
    assert default["summary"]["mcp"]["stats"]["auroc"]["mean"] == pytest.approx(0.505)
    assert "`msp` = max_c p_c (the paper's score" in report_markdown(default, [])
