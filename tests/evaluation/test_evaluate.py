"""`tradi.evaluate`: the same numbers as the metric functions called by hand, plus sklearn."""

from __future__ import annotations

import warnings

import pytest
import torch
from sklearn.metrics import roc_auc_score

import tradi
from tradi.metrics import (
    OOD_SCORES,
    available_scores,
    classification_metrics,
    mutual_information,
    ood_scores,
)


class _Fixed:
    """A predictor with fixed per-sample probabilities per input index (inputs are indices)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # [S, N_total, C]

    def sample_probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[:, x]


class _FixedLogits(_Fixed):
    """Fixed per-sample logits, with both samplers (as `tradi.SampledEnsemble`)."""

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[:, x]

    def sample_probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[:, x].softmax(dim=2)


def _logits(seed: int, samples: int, n: int, classes: int) -> torch.Tensor:
    return torch.randn(samples, n, classes, generator=torch.Generator().manual_seed(seed))


def _table(seed: int, samples: int, n: int, classes: int) -> torch.Tensor:
    return _logits(seed, samples, n, classes).softmax(dim=2)


def _loaders(n_in: int = 200, n_out: int = 100) -> tuple[list, list, torch.Tensor]:
    labels = torch.randint(0, 4, (n_in,), generator=torch.Generator().manual_seed(1))
    index_in, index_out = torch.arange(n_in), torch.arange(n_in, n_in + n_out)
    in_loader = [(index_in[i : i + 64], labels[i : i + 64]) for i in range(0, n_in, 64)]
    ood_loader = [(index_out[i : i + 64],) for i in range(0, n_out, 64)]
    return in_loader, ood_loader, labels


def _assert_auroc_matches_sklearn(result: tradi.Evaluation, names: tuple[str, ...]) -> None:
    assert result.ood is not None and result.scores_out is not None
    for name in names:
        scores = torch.cat([result.scores_in[name], result.scores_out[name]]).numpy()
        truth = [1] * len(result.scores_in[name]) + [0] * len(result.scores_out[name])
        assert result.ood[name]["auroc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-9)


def test_ensemble_metrics_match_the_functions_and_sklearn() -> None:
    table = _table(0, samples=5, n=300, classes=4)
    in_loader, ood_loader, labels = _loaders()
    result = tradi.evaluate(_Fixed(table), in_loader, ood_loader)

    mean = table.mean(dim=0)
    assert result.classification == pytest.approx(classification_metrics(mean[:200], labels))
    torch.testing.assert_close(result.scores_in["msp"], mean[:200].max(dim=1).values)
    torch.testing.assert_close(
        result.scores_out["mutual_information"], -mutual_information(table[:, 200:])
    )
    names = available_scores(False)  # probabilities allow every criterion but the logit ones
    assert tuple(result.scores_in) == tuple(result.ood) == names
    _assert_auroc_matches_sklearn(result, names)


def test_logits_give_every_score() -> None:
    logits = _logits(3, samples=4, n=300, classes=4)
    in_loader, ood_loader, labels = _loaders()
    result = tradi.evaluate(_FixedLogits(logits), in_loader, ood_loader)  # auto: sample_logits
    assert tuple(result.ood) == tuple(OOD_SCORES)
    expected = ood_scores(sample_logits=logits[:, 200:])
    for name, value in result.scores_out.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-6)
    probs = logits.softmax(dim=2).mean(dim=0)[:200]
    assert result.classification == pytest.approx(classification_metrics(probs, labels))
    _assert_auroc_matches_sklearn(result, tuple(OOD_SCORES))
    # the same ensemble read as probabilities: the same probability scores, no logit scores
    as_probs = tradi.evaluate(_FixedLogits(logits), in_loader, ood_loader, outputs="probs")
    assert tuple(as_probs.ood) == available_scores(False)
    for name, value in as_probs.scores_in.items():
        torch.testing.assert_close(value, result.scores_in[name], rtol=1e-6, atol=1e-7)


def test_a_callable_returning_logits_or_samples() -> None:
    logits = _logits(4, samples=3, n=300, classes=4)
    in_loader, ood_loader, _ = _loaders()
    one = tradi.evaluate(lambda x: logits[0, x], in_loader, ood_loader, outputs="logits")
    assert set(one.ood) == set(OOD_SCORES) - {"mutual_information", "variation_ratio", "variance"}
    torch.testing.assert_close(one.scores_in["logit"], logits[0, :200].max(dim=1).values)
    many = tradi.evaluate(lambda x: logits[:, x], in_loader, ood_loader, outputs="logits")
    assert tuple(many.ood) == tuple(OOD_SCORES)  # [S, N, C] read as S samples
    torch.testing.assert_close(
        many.scores_in["ensemble_energy"], logits[:, :200].logsumexp(dim=2).mean(dim=0)
    )


def test_chosen_scores_and_their_errors() -> None:
    table = _table(5, samples=3, n=300, classes=4)
    in_loader, ood_loader, _ = _loaders()
    result = tradi.evaluate(_Fixed(table), in_loader, ood_loader, scores=("entropy", "msp"))
    assert tuple(result.ood) == tuple(result.scores_in) == ("entropy", "msp")
    assert tuple(tradi.evaluate(_Fixed(table), in_loader, scores="msp").scores_in) == ("msp",)
    with pytest.raises(ValueError, match="'energy' needs logits"):
        tradi.evaluate(_Fixed(table), in_loader, scores=("energy",))
    with pytest.raises(ValueError, match="unknown OOD score 'mls'"):
        tradi.evaluate(_Fixed(table), in_loader, scores=("mls",))
    with pytest.raises(ValueError, match="has sample_probs only: pass outputs='probs'"):
        tradi.evaluate(_Fixed(table), in_loader, outputs="logits")
    with pytest.raises(ValueError, match="outputs must be 'auto', 'probs' or 'logits'"):
        tradi.evaluate(_Fixed(table), in_loader, outputs="softmax")  # type: ignore[arg-type]
    logits = _logits(6, samples=1, n=300, classes=4)[0]
    with pytest.raises(ValueError, match="if it returns logits, pass outputs='logits'"):
        tradi.evaluate(lambda x: logits[x], in_loader)  # logits read as probabilities


def test_old_score_names_still_read() -> None:
    table = _table(7, samples=3, n=300, classes=4)
    in_loader, ood_loader, _ = _loaders()
    result = tradi.evaluate(_Fixed(table), in_loader, ood_loader)
    assert result.ood is not None and result.scores_out is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mcp, the paper's name for msp: no warning
        assert result.ood["mcp"] == result.ood["msp"]
        assert torch.equal(result.scores_in["mcp"], result.scores_in["msp"])
    with pytest.warns(DeprecationWarning, match="use 'mutual_information'"):
        old = result.scores_out["neg_mutual_information"]
    assert torch.equal(old, result.scores_out["mutual_information"])
    with pytest.warns(DeprecationWarning, match="use 'entropy'"):
        chosen = tradi.evaluate(_Fixed(table), in_loader, scores=("neg_entropy", "mcp"))
    assert tuple(chosen.scores_in) == ("entropy", "msp")


def test_a_plain_network_is_one_sample_without_ood() -> None:
    table = _table(2, samples=1, n=50, classes=3)
    labels = table[0].argmax(dim=1)  # every prediction right

    def network(x: torch.Tensor) -> torch.Tensor:
        return table[0, x]

    result = tradi.evaluate(network, [(torch.arange(50), labels)])
    assert result.classification["accuracy"] == 1.0
    assert result.ood is None and result.scores_out is None
    assert torch.all(result.scores_in["mutual_information"] == 0)
    with pytest.raises(ValueError, match="must yield \\(inputs, labels\\)"):
        tradi.evaluate(network, [(torch.arange(50),)])


def test_batches_of_any_structure_are_read_by_io() -> None:
    """Dict batches (Hugging Face style) through `io=`, as `fit_ensemble` reads them: the same
    figures as the tuple batches of the same data."""
    import tradi

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    tuples = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]
    dicts = [{"image": a, "label": b} for a, b in tuples]
    ood = [{"image": torch.randn(10, 4) * 3} for _ in range(2)]
    io = tradi.ModelIO(inputs_fn=lambda b: b["image"], targets_fn=lambda b: b["label"])
    expected = tradi.evaluate(model, tuples, [(b["image"],) for b in ood])
    got = tradi.evaluate(model, dicts, ood, io=io)
    assert got.classification == expected.classification
    assert got.ood is not None and expected.ood is not None
    assert got.ood["msp"] == expected.ood["msp"]


def test_a_result_holding_a_predictor_is_named() -> None:
    import tradi

    class Holder:  # like tradi.Exploration: not callable, holds `.predictive`
        predictive = staticmethod(lambda x: x.softmax(dim=1))

    with pytest.raises(TypeError, match=r"pass its `\.predictive`"):
        tradi.evaluate(Holder(), [(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))])
