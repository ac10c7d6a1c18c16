"""The README's quick start runs as written, on the embedded digits, with a network of its own.

The README's first ``python`` block is executed with the names it leaves to the reader
(``MyNet``, the four loaders, ``epochs``, ``x_test``) bound to small real objects: a user who
copies it gets no error, and what it prints and builds is what the comments say.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tradi

README = Path(__file__).resolve().parents[2] / "README.md"


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start on your own model", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's quick start has no python block"
    return match.group(1)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_the_readme_quick_start_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    bench = tradi.load_benchmark("digits")

    def loader(split: tradi.data.TensorSplit, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(split.x, split.y), batch_size=64, shuffle=shuffle)

    names = {
        "MyNet": _Net,
        "train_loader": loader(bench.train, True),
        "val_loader": loader(bench.val),
        "test_loader": loader(bench.test),
        "ood_loader": loader(bench.ood_test),
        "epochs": 3,
        "x_test": bench.test.x[:16],
    }
    exec(compile(_quick_start(), str(README), "exec"), names)  # the README's code
    probs = names["probs"]
    assert probs.shape == (16, 5)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(16))
    assert isinstance(names["modes"], tradi.Exploration)
    assert isinstance(names["ensemble"], tradi.SampledEnsemble)
    printed = capsys.readouterr().out
    assert "auroc" in printed and "fpr95" in printed  # the printed OOD figures
