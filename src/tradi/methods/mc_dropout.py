"""MC Dropout (Gal & Ghahramani, 2016): dropout kept on at test time, N passes averaged."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tradi.methods.base import Method
from tradi.selection.fit import seeded_randomness

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@dataclass(frozen=True)
class MCDropoutOptions:
    """``n_passes``: stochastic forward passes per input (20 by default)."""

    n_passes: int = 20

    def __post_init__(self) -> None:
        if self.n_passes < 1:
            raise ValueError(f"n_passes must be >= 1, got {self.n_passes}")


class MCDropout(Method):
    """The trained network with only its dropout layers in training mode at test time.

    BatchNorm (and everything else) stays in eval mode, so its running statistics are used and
    never updated by prediction. Each batch of ``iter_predict``/``predict`` draws its dropout masks
    from a seed derived from ``TrainConfig.seed`` and the batch index, so predictions are
    reproducible and the global random state is left untouched.
    """

    name = "mc_dropout"
    label = "MC Dropout"
    short_label = "MC Dropout"
    options_type = MCDropoutOptions

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        super()._check_fit(val_loader)
        if not any(isinstance(m, DROPOUT_TYPES) for m in self.model_factory().modules()):
            raise ValueError("mc_dropout needs a model with dropout layers")

    @property
    def forward_passes_per_input(self) -> int:
        return self.options.n_passes

    @torch.no_grad()
    def sample_logits(self, x: Any) -> Tensor:
        """The logits of ``n_passes`` dropout draws from the global torch random state:
        [n_passes, N, C, ...] (``sample_probs``: their softmax, the same draws for the same
        random state)."""
        model = self._require_model().eval()
        dropouts = [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]
        for module in dropouts:
            module.train()
        try:
            return torch.stack(
                [self._network_logits(model, x) for _ in range(self.options.n_passes)]
            )
        finally:
            model.eval()

    def _batch_context(self, index: int) -> AbstractContextManager[object]:
        """Batch ``index`` of ``iter_outputs`` / ``iter_predict`` draws its masks from seed
        ``TrainConfig.seed + index``."""
        return seeded_randomness(self.train.seed + index, self.device)
