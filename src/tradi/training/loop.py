"""The one training loop every method goes through; methods differ by callbacks, not by copies.

Batches are ``(inputs, targets)`` pairs, or anything a `ModelIO` (``io=``) splits into inputs
and targets; ``loss_fn(outputs, targets)`` returns a mean loss, ``outputs`` being the logits
``io.logits`` takes from the model's output. So classification and segmentation (a
cross-entropy with ``ignore_index``) train unchanged.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # not tqdm.auto: its asyncio class calls iter() at construction

from tradi.distributed import all_reduce_sums, barrier, is_rank_zero, unwrap, world_size
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.modes import eval_mode
from tradi.training.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)
from tradi.training.config import Selection
from tradi.training.hooks import Callback, FitResult, LossFn, Scheduler, TimedCallbacks

logger = logging.getLogger(__name__)

_SELECTION_METRIC: dict[str, tuple[str, float]] = {
    # selection -> (history key, sign that turns "best" into "smallest")
    "best_val_loss": ("val_loss", 1.0),
    "best_val_accuracy": ("val_accuracy", -1.0),
}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    device: torch.device,
    io: ModelIO = DEFAULT_IO,
) -> dict:
    """Mean loss and accuracy of ``model`` in eval mode over ``loader``; every submodule's mode
    is restored (`tradi.plumbing.modes.eval_mode`).

    The loss is averaged over batches weighted by batch size. Targets outside ``[0, C)`` and
    equal to ``loss_fn.ignore_index`` (when the loss has one) are left out of the accuracy.
    In a distributed run the sums are reduced over the ranks (each evaluates its own shard).
    """
    loss_sum, count, correct, counted = 0.0, 0, 0, 0
    ignore_index = getattr(loss_fn, "ignore_index", None)
    with eval_mode(model):  # every submodule's mode restored, also after an error
        for batch in loader:
            inputs, targets = to_device(io.inputs(batch), device), io.targets(batch).to(device)
            outputs = io.logits(io.forward(model, inputs))
            loss_sum += float(loss_fn(outputs, targets)) * targets.shape[0]
            count += targets.shape[0]
            valid = (targets >= 0) & (targets < outputs.shape[1])
            if ignore_index is not None:
                valid &= targets != ignore_index
            correct += int((outputs.argmax(dim=1) == targets)[valid].sum())
            counted += int(valid.sum())
    # under DDP each rank sees its shard: summing over ranks gives every rank the same figures,
    # hence the same selected epoch
    totals = all_reduce_sums(
        {"loss": loss_sum, "count": count, "correct": correct, "counted": counted}
    )
    if totals["count"] == 0:
        raise ValueError("the validation loader yielded no batches")
    return {
        "val_loss": totals["loss"] / totals["count"],
        "val_accuracy": totals["correct"] / max(totals["counted"], 1),
    }


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    loss_fn: LossFn = F.cross_entropy,
    scheduler: Scheduler | None = None,
    val_loader: Iterable | None = None,
    select: Selection = "last",
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    io: ModelIO = DEFAULT_IO,
) -> FitResult:
    """Train ``model`` in place for ``epochs`` epochs and return what happened.

    With ``select="best_val_*"`` the model and every callback are rewound at the end to the epoch
    that was best on ``val_loader`` — the only held-out data ``fit`` ever sees. With a
    ``checkpoint_dir`` the full training state (model, optimizer, scheduler, callbacks, selection,
    RNG states of torch/NumPy/Python and of the loader) is written atomically after every epoch;
    ``resume=True`` continues from it, giving results bit-identical to an uninterrupted run when
    the loader, model and optimizer are built the same way.

    Under DDP (a process group is initialised) losses and validation figures are reduced over
    the ranks, and only rank 0 logs, shows progress and writes checkpoints; it saves its own
    random states, which all ranks restore on resume. ``model`` may be the DDP wrapper: it
    trains, while callbacks, validation, snapshots and checkpoints see the network inside
    (``unwrap``), so their names carry no ``module.`` prefix and no forward pass outside
    training runs a collective. ``io`` (`tradi.ModelIO`) says how a batch splits into inputs
    and targets and which output holds the logits; other wrappers are looked through like DDP.

    Raises ValueError for ``epochs < 1``, an unknown ``select``, a ``select`` without
    ``val_loader``, or a checkpoint written with other callbacks or scheduler.
    """
    _check_fit_arguments(epochs, select, val_loader)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    network = unwrap(model)
    run = _Run(
        network,
        optimizer,
        scheduler,
        callbacks,
        train_loader,
        Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None,
    )
    loop = run.start(resume)
    hooks = TimedCallbacks(callbacks, loop["callback_seconds"])
    progress = progress and is_rank_zero()
    epoch_bar = tqdm(range(loop["epoch"], epochs), desc="epochs", disable=not progress)
    for epoch in epoch_bar:
        started = time.perf_counter()
        hooks("on_epoch_start", network, epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, loop["steps"] = _train_one_epoch(
            model, train_loader, optimizer, loss_fn, hooks, device, loop["steps"], progress, io
        )
        metrics = {"epoch": float(epoch), "lr": lr, "train_loss": train_loss}
        if val_loader is not None:
            metrics.update(evaluate(network, val_loader, loss_fn, device, io))
        hooks("on_epoch_end", network, epoch, metrics)
        if scheduler is not None:
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        loop["seconds"] += time.perf_counter() - started
        run.end_epoch(loop, metrics, select, epochs)
        epoch_bar.set_postfix({k: round(v, 4) for k, v in metrics.items() if "loss" in k})
    return run.finish(loop)


def _check_fit_arguments(epochs: int, select: Selection, val_loader: Iterable | None) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if select != "last" and select not in _SELECTION_METRIC:
        raise ValueError(
            f"select must be 'last' or one of {list(_SELECTION_METRIC)}, got {select!r}"
        )
    if select != "last" and val_loader is None:
        raise ValueError(f"select={select!r} needs a val_loader")


@dataclass
class _Run:
    """The state ``fit`` starts from, records after each epoch and ends with."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    callbacks: Sequence[Callback]
    loader: Iterable[Any]
    checkpoint_path: Path | None

    def start(self, resume: bool) -> dict[str, Any]:
        """Call ``on_train_start``; then restore the checkpoint if asked and there is one."""
        loop: dict[str, Any] = {"epoch": 0, "steps": 0, "seconds": 0.0, "history": []}
        loop["best"] = None
        loop["callback_seconds"] = [0.0] * len(self.callbacks)
        for callback in self.callbacks:
            callback.on_train_start(self.network, self.optimizer)
        path = self.checkpoint_path
        if resume and path is not None and path.exists():
            loop = {**loop, **_restore(path, self)}
            logger.info("resumed from %s at epoch %d", path, loop["epoch"])
        return loop

    def end_epoch(
        self, loop: dict[str, Any], metrics: dict[str, float], select: Selection, epochs: int
    ) -> None:
        """Record the epoch, keep the best snapshot, log and checkpoint it (rank 0)."""
        loop["history"].append(metrics)
        loop["epoch"] = int(metrics["epoch"]) + 1
        if select != "last":
            loop["best"] = _better_snapshot(
                loop["best"], select, metrics, self.network, self.callbacks
            )
        if is_rank_zero():  # every rank holds the same state under DDP: one writes
            logger.info(
                "epoch %d/%d %s",
                loop["epoch"],
                epochs,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"),
            )
            if self.checkpoint_path is not None:
                _save(self.checkpoint_path, loop, self)
        barrier()  # no rank may resume from a checkpoint that is still being written

    def finish(self, loop: dict[str, Any]) -> FitResult:
        """Rewind to the selected epoch (if selecting) and say what happened."""
        selected_epoch = loop["epoch"] - 1
        best = loop["best"]
        if best is not None:
            self.network.load_state_dict(best["model"])
            for callback, state in zip(self.callbacks, best["callbacks"], strict=True):
                callback.load_state_dict(copy.deepcopy(state))
            selected_epoch = best["epoch"]
        return FitResult(
            train_seconds=loop["seconds"],
            epochs=loop["epoch"],
            steps=loop["steps"],
            selected_epoch=selected_epoch,
            history=list(loop["history"]),
            callback_seconds=list(loop["callback_seconds"]),
        )


def _train_one_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    hooks: TimedCallbacks,
    device: torch.device,
    steps: int,
    progress: bool,
    io: ModelIO,
) -> tuple[float, int]:
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch in tqdm(loader, desc="batches", leave=False, disable=not progress):
        inputs, targets = to_device(io.inputs(batch), device), io.targets(batch).to(device)
        optimizer.zero_grad(set_to_none=True)
        with ExitStack() as around_step:
            for callback in hooks.callbacks:
                around_step.enter_context(callback.step_context())
            loss = loss_fn(io.logits(io.forward(model, inputs)), targets)
            (loss * _share_of_global_batch(targets.shape[0])).backward()
        optimizer.step()
        steps += 1
        hooks("on_after_step", unwrap(model), optimizer, steps)
        loss_sum += loss.detach().double() * targets.shape[0]
        count += targets.shape[0]
    totals = all_reduce_sums({"loss": loss_sum, "count": count})
    if totals["count"] == 0:
        raise ValueError("the training loader yielded no batches")
    return totals["loss"] / totals["count"], steps


def _share_of_global_batch(rows: int) -> float:
    """The weight that makes DDP's average of the ranks' gradients the gradient of the mean loss
    over the global batch: rows * world_size / global rows (1 when the parts are equal, and
    outside a distributed run). It corrects the uneven split of a last, odd-sized batch."""
    if world_size() == 1:
        return 1.0
    return rows * world_size() / all_reduce_sums({"rows": rows})["rows"]


def _better_snapshot(
    best: dict[str, Any] | None,
    select: str,
    metrics: dict[str, float],
    model: nn.Module,
    callbacks: Sequence[Callback],
) -> dict[str, Any]:
    """Keep a copy of the model and callbacks when this epoch beats the best so far (ties: earlier)."""
    key, sign = _SELECTION_METRIC[select]
    score = sign * metrics[key]
    if best is not None and not score < best["score"]:  # written so that a NaN never wins
        return best
    return {
        "epoch": int(metrics["epoch"]),
        "score": score,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "callbacks": [copy.deepcopy(callback.state_dict()) for callback in callbacks],
    }


def _save(path: Path, loop: dict[str, Any], run: _Run) -> None:
    save_atomic(
        {
            "loop": loop,
            "model": run.network.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "callbacks": [callback.state_dict() for callback in run.callbacks],
            "rng": capture_rng_state(run.loader),
        },
        path,
    )


def _restore(path: Path, run: _Run) -> dict[str, Any]:
    """Load ``path`` into the run's objects and return its loop state."""
    state = load_checkpoint(path)
    callbacks, scheduler = run.callbacks, run.scheduler
    if len(state["callbacks"]) != len(callbacks):
        raise ValueError(
            f"{path} was written with {len(state['callbacks'])} callback(s), "
            f"resuming with {len(callbacks)}"
        )
    if (state["scheduler"] is None) != (scheduler is None):
        raise ValueError(f"{path} and this run disagree on whether a scheduler is used")
    run.network.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    for callback, callback_state in zip(callbacks, state["callbacks"], strict=True):
        callback.load_state_dict(callback_state)
    restore_rng_state(state["rng"], run.loader)
    return state["loop"]
