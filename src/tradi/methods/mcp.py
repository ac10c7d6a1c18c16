"""The baseline: one deterministic network; its confidence is the maximum softmax probability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tradi.methods.base import Method


@dataclass(frozen=True)
class MCPOptions:
    """MCP has no options of its own: only the shared `TrainConfig`."""


class MCP(Method):
    """One network trained once; one forward pass per input."""

    name = "mcp"
    label = "Baseline (MCP)"
    short_label = "MCP"
    options_type = MCPOptions

    @property
    def forward_passes_per_input(self) -> int:
        return 1

    @torch.no_grad()
    def sample_logits(self, x: Any) -> Tensor:
        """The network's logits as one sample: [1, N, C, ...]."""
        model = self._require_model().eval()
        return self._network_logits(model, x).unsqueeze(0)
