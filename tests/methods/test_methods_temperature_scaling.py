"""Temperature scaling (Guo et al. 2017): T recovered from data drawn at a known temperature,
validation NLL never above T = 1's, accuracy unchanged, dense inputs and persistence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tradi.methods import build_method
from tradi.methods.temperature_scaling import fit_temperature

TRAIN = {"epochs": 3, "optimizer": "adam", "lr": 1e-2, "progress": False}


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_at(true_t: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(20_000, 5, generator=generator)
    labels = torch.multinomial((logits / true_t).softmax(dim=1), 1, generator=generator)[:, 0]
    fitted = fit_temperature(logits, labels)
    # the MLE of one parameter from 20,000 draws: its standard error is ~1% of T here
    assert fitted == pytest.approx(true_t, rel=0.04)
    # the NLL is minimal at the fitted T: both neighbours are worse
    nll = [F.cross_entropy(logits / t, labels) for t in (0.98 * fitted, fitted, 1.02 * fitted)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_fit_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match=r"logits \[N, C\] and labels \[N\]"):
        fit_temperature(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


def test_calibrates_on_validation_and_keeps_the_accuracy(
    model_factory, train_loader, val_loader, make_loader
) -> None:
    method = build_method("temperature_scaling", model_factory, train=TRAIN)
    info = method.fit(train_loader, val_loader)
    assert method.temperature is not None and method.temperature > 0
    assert info.selection_seconds > 0
    model = method.model.eval()
    with torch.no_grad():
        val_logits = torch.cat([model(x) for x, _ in val_loader])
    val_labels = torch.cat([y for _, y in val_loader])
    fitted_nll = F.cross_entropy(val_logits / method.temperature, val_labels)
    assert fitted_nll <= F.cross_entropy(val_logits, val_labels) + 1e-9

    test = make_loader(150, seed=3)
    probs = method.predict(test)[0]
    mcp = build_method("mcp", model_factory, train=TRAIN)
    mcp.fit(train_loader, val_loader)  # the same seed: the same network
    torch.testing.assert_close(mcp.model.state_dict(), method.model.state_dict())
    assert torch.equal(probs.argmax(dim=1), mcp.predict(test)[0].argmax(dim=1))


def test_needs_a_validation_loader(model_factory, train_loader) -> None:
    method = build_method("temperature_scaling", model_factory, train=TRAIN)
    with pytest.raises(ValueError, match="val_loader"):
        method.fit(train_loader)


def test_dense_logits_skip_void_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(8, 2, 3, 4, generator=generator)
    targets = (inputs[:, 0] > 0).long()
    targets[:, 0] = 255
    loader = list(zip(inputs.split(4), targets.split(4), strict=True))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    method = build_method(
        "temperature_scaling", lambda: torch.nn.Conv2d(2, 2, 1), train=TRAIN, loss_fn=loss_fn
    )
    method.fit(loader, loader)
    model = method.model.eval()
    with torch.no_grad():
        logits = model(inputs).movedim(1, -1)[targets != 255]
    assert method.temperature == pytest.approx(fit_temperature(logits, targets[targets != 255]))
    assert method.predict(loader).shape == (1, 8, 2, 3, 4)


# ---------------------------------------------------------------- non-finite validation rows
def _drawn(n: int = 4_000, t: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    logits = 3.0 * torch.randn(n, 4, generator=generator)
    labels = torch.multinomial((logits / t).softmax(dim=1), 1, generator=generator)[:, 0]
    return logits, labels


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rows_are_dropped_with_a_warning_naming_them(bad: float) -> None:
    logits, labels = _drawn()
    clean = fit_temperature(logits, labels)
    dirty = logits.clone()
    dirty[7, 2] = bad
    dirty[1234] = bad
    with pytest.warns(RuntimeWarning, match=r"2 of 4000 .*non-finite.*\[7, 1234\]"):
        fitted = fit_temperature(dirty, labels)
    assert math.isfinite(fitted) and fitted > 0
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[[7, 1234]] = False
    # T is the NLL minimiser over the finite rows: both neighbours are worse there
    nll = [F.cross_entropy(logits[keep] / (f * fitted), labels[keep]) for f in (0.98, 1.0, 1.02)]
    assert nll[1] < nll[0] and nll[1] < nll[2]
    assert fitted == pytest.approx(clean, rel=0.01)  # two rows of 4,000 barely move T


def test_all_rows_non_finite_is_an_error() -> None:
    logits, labels = _drawn(10)
    logits[:, 0] = float("nan")
    with pytest.raises(ValueError, match=r"all 10 validation rows.*non-finite"):
        fit_temperature(logits, labels)


def test_one_nan_validation_input_leaves_clean_test_inputs_finite(
    model_factory, train_loader, val_loader, make_loader
) -> None:
    inputs, targets = map(torch.cat, zip(*val_loader, strict=True))
    inputs[3] = float("nan")
    dirty = list(zip(inputs.split(32), targets.split(32), strict=True))
    method = build_method("temperature_scaling", model_factory, train=TRAIN)
    with pytest.warns(RuntimeWarning, match=r"1 of \d+ .*non-finite.*\[3\]"):
        method.fit(train_loader, dirty)
    assert method.temperature is not None and math.isfinite(method.temperature)
    probs = method.predict(make_loader(50, seed=4))[0]
    assert torch.isfinite(probs).all()
