"""`tradi.evaluate`: the same numbers as the metric functions called by hand, plus sklearn."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

import tradi
from tradi.metrics import classification_metrics, mutual_information


class _Fixed:
    """A predictor with fixed per-sample probabilities per input index (inputs are indices)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # [S, N_total, C]

    def sample_probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[:, x]


def _table(seed: int, samples: int, n: int, classes: int) -> torch.Tensor:
    logits = torch.randn(samples, n, classes, generator=torch.Generator().manual_seed(seed))
    return logits.softmax(dim=2)


def test_ensemble_metrics_match_the_functions_and_sklearn() -> None:
    table = _table(0, samples=5, n=300, classes=4)
    labels = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(1))
    index_in, index_out = torch.arange(200), torch.arange(200, 300)
    in_loader = [(index_in[i : i + 64], labels[i : i + 64]) for i in range(0, 200, 64)]
    ood_loader = [(index_out[i : i + 64],) for i in range(0, 100, 64)]
    result = tradi.evaluate(_Fixed(table), in_loader, ood_loader)

    mean = table.mean(dim=0)
    assert result.classification == pytest.approx(classification_metrics(mean[:200], labels))
    torch.testing.assert_close(result.scores_in["mcp"], mean[:200].max(dim=1).values)
    torch.testing.assert_close(
        result.scores_out["neg_mutual_information"], -mutual_information(table[:, 200:])
    )
    for name in ("mcp", "neg_entropy", "neg_mutual_information"):
        scores = torch.cat([result.scores_in[name], result.scores_out[name]]).numpy()
        truth = [1] * 200 + [0] * 100  # in-distribution positive
        assert result.ood[name]["auroc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-9)


def test_a_plain_network_is_one_sample_without_ood() -> None:
    table = _table(2, samples=1, n=50, classes=3)
    labels = table[0].argmax(dim=1)  # every prediction right

    def network(x: torch.Tensor) -> torch.Tensor:
        return table[0, x]

    result = tradi.evaluate(network, [(torch.arange(50), labels)])
    assert result.classification["accuracy"] == 1.0
    assert result.ood is None and result.scores_out is None
    assert torch.all(result.scores_in["neg_mutual_information"] == 0)
    with pytest.raises(ValueError, match="must yield \\(inputs, labels\\)"):
        tradi.evaluate(network, [(torch.arange(50),)])
