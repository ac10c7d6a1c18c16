"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

The trained network's logits z are divided by one scalar T > 0 fitted on the validation split
by minimising the NLL of softmax(z / T) (Guo et al., section 4.2). T is optimised as log T with
L-BFGS, so it stays positive. Dividing by T keeps the arg-max: accuracy is unchanged, only the
confidence moves. The network is the seed's ordinary run, so the runner shares it with MCP.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradi.methods.base import FitInfo, Method
from tradi.plumbing.adapters import to_device

#: Labelled pixels of a segmentation validation set kept (seeded draw) to fit T: the logits of
#: every pixel would not fit in memory, and one scalar is fitted well from far fewer.
MAX_FIT_ROWS = 2_000_000


@dataclass(frozen=True)
class TemperatureScalingOptions:
    """``max_iter``: L-BFGS iterations on log T (50, as in Guo et al.'s reference code)."""

    max_iter: int = 50

    def __post_init__(self) -> None:
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")


#: Below this many misclassified validation inputs the fitted temperature is not trusted (warned).
MIN_VALIDATION_ERRORS = 10


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 50) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) against ``labels``.

    ``logits``: [N, C] float; ``labels``: [N] int64 in [0, C). L-BFGS on log T from T = 1 (strong
    Wolfe line search); returns T as a float.

    Rows with a non-finite logit (NaN or +-inf, e.g. from a corrupt validation input) are left
    out of the fit with one RuntimeWarning naming how many and their first indices: one such row
    would otherwise make the NLL, hence T, NaN, and every later prediction NaN. Dropping keeps a
    run that trained for hours (T is fitted after training) and the warning says which inputs
    to inspect. Raises ValueError for empty or mismatched inputs, or when no row is finite.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or len(labels) == 0:
        raise ValueError(
            f"need logits [N, C] and labels [N] with N > 0, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    logits, labels = _finite_rows(logits.detach().double(), labels.detach())
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def _finite_rows(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of ``logits`` [N, C] (and ``labels`` [N]) whose logits are all finite; warns
    (RuntimeWarning) naming the count and the first indices of the others, ValueError if none."""
    finite = torch.isfinite(logits).all(dim=1)
    dropped = (~finite).nonzero()[:, 0].tolist()
    if not dropped:
        return logits, labels
    if len(dropped) == len(labels):
        raise ValueError(
            f"fit_temperature: all {len(labels)} validation rows have non-finite logits (NaN or "
            "inf): check the validation inputs and the network (did training diverge?)"
        )
    shown = f"{dropped[:10]}" + (" ..." if len(dropped) > 10 else "")
    warnings.warn(
        f"fit_temperature: {len(dropped)} of {len(labels)} validation rows have non-finite "
        f"logits (NaN or inf) and are left out of the fit of T; rows {shown} (in validation "
        "order, pixels flattened for segmentation): check those inputs",
        RuntimeWarning,
        stacklevel=3,
    )
    return logits[finite], labels[finite]


class TemperatureScaling(Method):
    """The seed's network with its logits divided by a temperature fitted on validation data;
    one forward pass per input."""

    name = "temperature_scaling"
    label: ClassVar[str] = "Temperature scaling"
    short_label: ClassVar[str] = "Temp. scaling"
    options_type = TemperatureScalingOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature: float | None = None

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        super()._check_fit(val_loader)
        if val_loader is None:
            raise ValueError("temperature_scaling fits its temperature on a val_loader; pass one")

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        """Fit T on ``val_loader`` (the whole validation split); its time is selection time."""
        assert val_loader is not None  # checked before training by _check_fit
        started = time.perf_counter()
        logits, labels = self._validation_logits(val_loader)
        self.temperature = fit_temperature(logits, labels, self.options.max_iter)
        errors = int((logits.argmax(dim=1) != labels).sum())
        if errors < MIN_VALIDATION_ERRORS:
            warnings.warn(
                f"temperature_scaling: T = {self.temperature:.3g} fitted on a validation set with "
                f"{errors} misclassified input(s): with so few errors the NLL-optimal T mostly "
                "sharpens the predictions and does not carry over to test data; use a larger "
                "validation split",
                RuntimeWarning,
                stacklevel=2,
            )
        info.selection_seconds = time.perf_counter() - started
        return info

    @torch.no_grad()
    def _validation_logits(self, loader: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """Logits and labels of the labelled validation rows (pixels), [R, C] and [R]; beyond
        ``MAX_FIT_ROWS`` labelled rows, each is kept with one rate, drawn from the seed."""
        model = self._require_model().eval()
        labelled = sum(int(self._labelled(self.io.targets(b), None).sum()) for b in loader)
        rate = min(1.0, MAX_FIT_ROWS / max(labelled, 1))
        generator = torch.Generator().manual_seed(self.train.seed)
        rows, targets = [], []
        for batch in loader:
            logits = self._logits(model, self.io.inputs(batch)).cpu()
            logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
            labels = self.io.targets(batch).reshape(-1)
            keep = self._labelled(labels, logits.shape[1])
            if rate < 1.0:
                keep &= torch.rand(labels.shape, generator=generator) < rate
            rows.append(logits[keep])
            targets.append(labels[keep])
        return torch.cat(rows), torch.cat(targets)

    def _labelled(self, labels: Tensor, num_classes: int | None) -> Tensor:
        """Rows with a class label: not the loss's ``ignore_index``, in [0, C) when C is known."""
        keep = labels >= 0
        if num_classes is not None:
            keep &= labels < num_classes
        ignore_index = getattr(self.loss_fn, "ignore_index", None)
        if ignore_index is not None:
            keep &= labels != ignore_index
        return keep

    @property
    def forward_passes_per_input(self) -> int:
        return 1

    @torch.no_grad()
    def sample_logits(self, x: Any) -> Tensor:
        """The network's logits divided by T, as one sample: [1, N, C, ...]; their softmax is
        the calibrated prediction, so every logit score (logit, energy) is that of z / T."""
        if self.temperature is None:
            raise RuntimeError(f"{self.name}: call fit() or load_state_dict() first")
        model = self._require_model().eval()
        return (self._logits(model, x) / self.temperature).unsqueeze(0)

    def _logits(self, model: nn.Module, x: Any) -> Tensor:
        """The network's logits [N, C, ...] for model inputs ``x`` (read through ``io``)."""
        return self.io.logits(self.io.forward(model, to_device(x, self.device)))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "temperature": self.temperature}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.temperature = float(state["temperature"])
