"""A user's model left in the modes it came in: every submodule's ``training`` flag restored.

`nn.Module.train(mode)` and `eval()` set ONE flag on every submodule, so ``model.train(was)``
after a block loses a mixed model's modes (a frozen BatchNorm kept in eval mode inside a network
in train mode, a dropout switched on for MC dropout). torch has no context manager that restores
each submodule's own flag (`torch.nn.Module.train` is recursive; `torch.no_grad` and
`torch.inference_mode` are about autograd, not modes), hence these few lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may switch ``model``'s modes; every submodule's ``training`` flag (the
    root's included, shared submodules once) is set back as it was on exit, also after an
    exception. Yields ``model``; parameters and buffers are not touched."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block (deterministic: dropout off, BatchNorm reads its
    running statistics and does not update them), each submodule's own mode restored on exit
    (`preserved_modes`). Yields ``model``."""
    with preserved_modes(model):
        yield model.eval()
