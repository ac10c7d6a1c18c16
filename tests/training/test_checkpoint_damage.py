"""Checkpoints that survive a crash: written atomically and verified, the previous one kept, a
damaged latest replaced by the previous one with a warning, and a clear error naming the file
when neither reads (through `load_checkpoint`, through `fit`, and through `tradi run --resume`)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tradi.training import fit
from tradi.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    previous_path,
    save_atomic,
    verify_file,
)


def _state(epoch: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(epoch)
    return {"epoch": epoch, "w": torch.randn(64, 64, generator=generator)}


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _zero(data: bytes) -> bytes:
    return b""


def _random(data: bytes) -> bytes:
    return os.urandom(len(data))  # different bytes every run: any of them must be refused


def _flipped(data: bytes) -> bytes:
    """One bit of a tensor's data flipped: torch.load alone accepts this file."""
    at = len(data) // 2
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "truncated": _truncated,
    "zero bytes": _zero,
    "random bytes": _random,
    "one flipped bit": _flipped,
}


def test_each_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_atomic(_state(1), path)
    assert not previous_path(path).exists()  # nothing to keep after the first save
    save_atomic(_state(2), path)
    save_atomic(_state(3), path)
    assert previous_path(path).name == "checkpoint.prev.pt"
    assert load_checkpoint(path)["epoch"] == 3
    assert torch.load(previous_path(path), weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_atomic(_state(1), path)
    save_atomic(_state(2), path)
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        verify_file(path)
    with caplog.at_level(logging.WARNING, logger="tradi"):
        state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], _state(1)["w"])
    assert f"checkpoint {path} cannot be read" in caplog.text
    assert "resuming from the previous one, checkpoint.prev.pt" in caplog.text


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_with_both_damaged_the_error_names_the_files_and_what_to_do(
    damage: str, tmp_path: Path
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_atomic(_state(1), path)
    save_atomic(_state(2), path)
    for file in (path, previous_path(path)):
        file.write_bytes(DAMAGES[damage](file.read_bytes()))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "checkpoint.pt:" in message and "checkpoint.prev.pt:" in message
    assert "delete checkpoint.pt and checkpoint.prev.pt there" in message
    assert isinstance(caught.value, OSError)  # the CLI's handler: `tradi: error:`, exit 2


def test_a_missing_checkpoint_falls_back_or_is_named(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    with pytest.raises(
        CheckpointError, match=re.escape("checkpoint.pt: missing; checkpoint.prev.pt: missing")
    ):
        load_checkpoint(path)
    save_atomic(_state(1), path)
    save_atomic(_state(2), path)
    path.unlink()
    assert load_checkpoint(path)["epoch"] == 1


def test_a_write_that_does_not_read_back_is_refused_and_the_old_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that loses data between the write and the rename (simulated: the saved
    bytes are truncated after torch.save) fails the save; the checkpoint stays the old one."""
    path = tmp_path / CHECKPOINT_NAME
    save_atomic(_state(1), path)
    real_save = torch.save

    def lossy_save(obj: object, handle: object) -> None:
        real_save(obj, handle)
        handle.truncate(100)  # type: ignore[attr-defined]

    monkeypatch.setattr(torch, "save", lossy_save)
    with pytest.raises(CheckpointError, match="does not read back as written"):
        save_atomic(_state(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert not previous_path(path).exists()


def _fit(checkpoint_dir: Path, epochs: int) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    data = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(
        model,
        data,
        optimizer=optimizer,
        epochs=epochs,
        progress=False,
        checkpoint_dir=checkpoint_dir,
    )


def test_fit_resumes_from_the_previous_checkpoint_or_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fit(tmp_path, epochs=2)
    path = tmp_path / CHECKPOINT_NAME
    assert load_checkpoint(path)["loop"]["epoch"] == 2
    path.write_bytes(_truncated(path.read_bytes()))
    with caplog.at_level(logging.INFO, logger="tradi"):
        _fit(tmp_path, epochs=3)
    assert "resuming from the previous one" in caplog.text
    assert f"resumed from {path} at epoch 1" in caplog.text
    assert load_checkpoint(path)["loop"]["epoch"] == 3
    for file in (path, previous_path(path)):
        file.write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=re.escape(f"cannot resume from the checkpoint in {tmp_path}")
    ):
        _fit(tmp_path, epochs=4)
