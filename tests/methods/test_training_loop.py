"""The one training loop: learning, validation-only model selection, logging, progress, dense
targets with ignore_index, and bit-identical resumption from atomic epoch checkpoints."""

from __future__ import annotations

import copy
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tradi.tracking import WeightTracker
from tradi.training import (
    Callback,
    SWAGCallback,
    TrackingCallback,
    TrainConfig,
    evaluate,
    fit,
    make_optimizer,
    make_scheduler,
    options_from_mapping,
)
from tradi.training.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)


class RecordWeights(Callback):
    """Keeps a copy of the model's state at the end of every epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        self.states.append(copy.deepcopy(model.state_dict()))


class Interrupt(Callback):
    """Raises at the end of epoch ``at`` (before that epoch's checkpoint is written); records
    the epochs it saw start, i.e. those actually trained in this session."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.started: list[int] = []

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        self.started.append(epoch)

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def mean_nll(model: nn.Module, loader) -> float:
    """Independent recomputation of the validation loss on the whole split at once."""
    inputs = torch.cat([x for x, _ in loader])
    targets = torch.cat([y for _, y in loader])
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(inputs), targets))


def test_training_learns_the_blobs(model_factory, train_loader, val_loader) -> None:
    torch.manual_seed(0)
    model = model_factory()
    config = TrainConfig(epochs=5, optimizer="adam", lr=1e-2, progress=False)
    optimizer = make_optimizer(model, config)
    result = fit(
        model,
        train_loader,
        optimizer=optimizer,
        epochs=config.epochs,
        val_loader=val_loader,
        progress=False,
    )
    assert result.epochs == 5 and result.selected_epoch == 4
    assert result.steps == 5 * len(train_loader)
    assert result.history[-1]["train_loss"] < 0.6 * result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] > 0.8  # blobs 2 apart with unit spread: ~90%
    assert result.train_seconds > 0


def test_model_selection_uses_validation_only(model_factory, make_loader) -> None:
    """The selected epoch is the argmin of the VALIDATION loss, which here points to a different
    epoch than the test loss would: a loop that peeked at test data would fail this test."""
    train = make_loader(192, seed=1, shuffle=True)
    # validation labels are shifted: the better the net learns, the worse its validation loss
    val = make_loader(96, seed=2, label_shift=1)
    test = make_loader(96, seed=3)
    torch.manual_seed(0)
    model = model_factory()
    recorder = RecordWeights()
    result = fit(
        model,
        train,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        epochs=6,
        val_loader=val,
        select="best_val_loss",
        callbacks=[recorder],
        progress=False,
    )
    snapshots = []
    for state in recorder.states:
        snapshot = model_factory()
        snapshot.load_state_dict(state)
        snapshots.append(snapshot)
    val_losses = [mean_nll(m, val) for m in snapshots]
    test_losses = [mean_nll(m, test) for m in snapshots]
    assert int(np.argmin(val_losses)) != int(np.argmin(test_losses))  # the test is meaningful
    assert result.selected_epoch == int(np.argmin(val_losses))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, recorder.states[result.selected_epoch][name])
    np.testing.assert_allclose(
        [h["val_loss"] for h in result.history], val_losses, rtol=1e-5, atol=1e-6
    )


def test_selection_needs_a_validation_loader(model_factory, train_loader) -> None:
    model = model_factory()
    with pytest.raises(ValueError, match="needs a val_loader"):
        fit(
            model,
            train_loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            select="best_val_accuracy",
        )


def test_loss_is_logged_per_epoch_and_progress_can_be_silenced(
    model_factory, train_loader, caplog, capsys
) -> None:
    model = model_factory()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.INFO, logger="tradi.training.loop"):
        fit(model, train_loader, optimizer=optimizer, epochs=2, progress=False)
    lines = [r.getMessage() for r in caplog.records if "train_loss=" in r.getMessage()]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert capsys.readouterr().err == ""
    fit(model, train_loader, optimizer=optimizer, epochs=1, progress=True)
    assert "epochs" in capsys.readouterr().err


def test_dense_targets_with_ignore_index_train_unchanged() -> None:
    """Segmentation: the same loop with a 1x1-conv net; ignored pixels count in no metric."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(24, 2, 5, 5, generator=g)
    targets = (inputs[:, 0] > 0).long()
    targets[:, 0, :] = 7  # a void row
    data = torch.utils.data.DataLoader(list(zip(inputs, targets, strict=True)), batch_size=8)
    torch.manual_seed(0)
    model = nn.Conv2d(2, 2, kernel_size=1)
    loss_fn = nn.CrossEntropyLoss(ignore_index=7)
    result = fit(
        model,
        data,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        epochs=3,
        loss_fn=loss_fn,
        val_loader=data,
        progress=False,
    )
    with torch.no_grad():
        predicted = model(inputs).argmax(1)
    valid = targets != 7
    expected = float((predicted == targets)[valid].float().mean())
    assert result.history[-1]["val_accuracy"] == pytest.approx(expected)
    assert expected > 0.9  # the sign of channel 0 is learnable by a 1x1 conv
    assert evaluate(model, data, loss_fn, torch.device("cpu"))["val_accuracy"] == pytest.approx(
        expected
    )


def test_evaluate_restores_every_submodules_mode_also_after_an_error() -> None:
    """A mixed model (a frozen BatchNorm in eval mode inside a network in train mode) keeps
    each submodule's flag; evaluation itself runs in eval mode (equal to a copy's eval pass)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = float(F.cross_entropy(reference(x), y))
    loss = evaluate(model, [(x, y)], F.cross_entropy, torch.device("cpu"))["val_loss"]
    assert loss == pytest.approx(expected, rel=1e-6)
    assert [m.training for m in model.modules()] == modes

    def broken(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("bad loss")

    with pytest.raises(RuntimeError, match="bad loss"):
        evaluate(model, [(x, y)], broken, torch.device("cpu"))
    assert [m.training for m in model.modules()] == modes


def _run(
    make_loader, model_factory, checkpoint_dir: Path, *, interrupt: Interrupt, init_seed: int
) -> tuple[nn.Module, Any, TrackingCallback, SWAGCallback]:
    """Four epochs of Adam + StepLR with dropout, tracking, SWAG and best-epoch selection."""
    train = make_loader(192, seed=1, shuffle=True)
    val = make_loader(96, seed=2)
    torch.manual_seed(init_seed)
    model = model_factory()
    config = TrainConfig(
        epochs=4, optimizer="adam", lr=1e-2, weight_decay=1e-3, scheduler="step", step_size=2
    )
    optimizer = make_optimizer(model, config)
    tracking = TrackingCallback(lambda m, o: WeightTracker(m, step="delta"), start_epoch=1)
    swag = SWAGCallback(start_epoch=1, max_rank=2)
    result = fit(
        model,
        train,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config),
        epochs=config.epochs,
        val_loader=val,
        select="best_val_accuracy",
        callbacks=[tracking, swag, interrupt],
        progress=False,
        checkpoint_dir=checkpoint_dir,
    )
    return model, result, tracking, swag


def test_resume_after_interruption_is_bit_identical(
    tmp_path: Path, make_loader, model_factory
) -> None:
    args = (make_loader, model_factory)
    torch.manual_seed(123)
    reference, ref_result, ref_tracking, ref_swag = _run(
        *args, tmp_path / "a", interrupt=Interrupt(None), init_seed=0
    )

    torch.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        _run(*args, tmp_path / "b", interrupt=Interrupt(2), init_seed=0)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["loop"]["epoch"] == 2
    # a new process: other global RNG state, other initial weights; the checkpoint restores all
    torch.manual_seed(999)
    watch = Interrupt(None)
    resumed, result, tracking, swag = _run(*args, tmp_path / "b", interrupt=watch, init_seed=5)
    assert watch.started == [2, 3]  # epochs 0 and 1 come from the checkpoint, not retrained

    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert result.selected_epoch == ref_result.selected_epoch
    assert result.history == ref_result.history
    assert ref_tracking.tracker is not None and tracking.tracker is not None
    for name, mean in ref_tracking.tracker.mean().items():
        assert torch.equal(mean, tracking.tracker.mean()[name])
        assert torch.equal(ref_tracking.tracker.variance()[name], tracking.tracker.variance()[name])
    assert ref_swag.collector is not None and swag.collector is not None
    assert swag.collector.num_collected == ref_swag.collector.num_collected == 3
    for name, mean in ref_swag.collector.mean().items():
        assert torch.equal(mean, swag.collector.mean()[name])
    assert not list(tmp_path.glob("*/*.tmp"))  # atomic writes leave no temporary file behind


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)

    def crash(obj, handle) -> None:
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    kept = load_checkpoint(path)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.ones(3))


def test_rng_capture_restores_every_generator(make_loader) -> None:
    train = make_loader(64, seed=4, shuffle=True)
    state = capture_rng_state(train)
    first = (torch.rand(3), np.random.rand(3), random.random(), [y for _, y in train])
    restore_rng_state(state, train)
    second = (torch.rand(3), np.random.rand(3), random.random(), [y for _, y in train])
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    assert all(torch.equal(a, b) for a, b in zip(first[3], second[3], strict=True))


def test_config_rejects_unknown_keys_and_bad_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['learning_rate'\]"):
        options_from_mapping(TrainConfig, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="adm")  # type: ignore[arg-type]
    config = options_from_mapping(
        TrainConfig, {"optimizer": "sgd", "lr": 0.2, "scheduler": "cosine", "epochs": 4}
    )
    model = nn.Linear(2, 2)
    optimizer = make_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    scheduler = make_scheduler(optimizer, config)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero
    adamw = make_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.1))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.1


def test_each_callbacks_time_is_measured_apart(
    model_factory, train_loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake clock that only a callback moves: the loop charges exactly that callback."""
    import tradi.training.loop as loop

    clock = {"now": 0.0}
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock["now"])

    class Slow(Callback):
        def on_after_step(self, model: nn.Module, optimizer: Any, step: int) -> None:
            clock["now"] += 2.0

        def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict) -> None:
            clock["now"] += 0.5

    model = model_factory()
    result = fit(
        model,
        train_loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        callbacks=[Callback(), Slow()],
        progress=False,
    )
    assert result.steps == 2 * len(train_loader)
    assert result.callback_seconds == [0.0, 2.0 * result.steps + 0.5 * 2]
    assert result.train_seconds == sum(result.callback_seconds)  # nothing else moved the clock
