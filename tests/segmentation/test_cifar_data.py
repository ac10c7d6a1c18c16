"""CIFAR-10 for the paper's classification table: both file layouts, the standard augmentation
(random crop with black padding, horizontal flip) and the report's comparison with the paper."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tradi.data import denormalise, load_benchmark
from tradi.experiments import config_text, load_config
from tradi.experiments.tables import main_table, summarize

BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
SKIP_CHECKSUMS: dict[str, str | None] = {
    "cifar10/cifar10.npz": None,
    **{f"cifar10/cifar-10-batches-py/{name}": None for name in BATCH_NAMES},
}
PER_BATCH = 8


def _raw(seed: int, n: int = PER_BATCH) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, n).astype(np.int64)


def _write_batches(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The official python layout: each row of b"data" is the R, G, B planes one after another."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [_raw(seed) for seed in range(5)]
    for name, (images, labels) in zip(BATCH_NAMES, [*train, _raw(5)], strict=True):
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        with (folder / name).open("wb") as stream:
            pickle.dump({b"data": rows, b"labels": labels.tolist()}, stream)
    return np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])


def test_python_batches_are_read_in_order_and_preferred_to_the_npz(tmp_path: Path) -> None:
    images, labels = _write_batches(tmp_path)
    decoy = np.zeros_like(images)  # the npz, which "auto" must not take when batches exist
    np.savez(
        tmp_path / "cifar10" / "cifar10.npz",
        x_train=decoy,
        y_train=labels,
        x_test=decoy[:PER_BATCH],
        y_test=labels[:PER_BATCH],
    )
    bench = load_benchmark("cifar10", tmp_path, val_fraction=0.25, checksums=SKIP_CHECKSUMS)
    assert (len(bench.train), len(bench.val), len(bench.test)) == (30, 10, PER_BATCH)
    x = torch.cat([bench.train.x, bench.val.x])
    y = torch.cat([bench.train.y, bench.val.y])
    train_order, val_order = _split_order(40, 0.25)
    order = torch.tensor(train_order + val_order)
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(denormalise("cifar10", x), expected[order], atol=1e-5, rtol=0)
    torch.testing.assert_close(y, torch.from_numpy(labels)[order])


def _split_order(n: int, val_fraction: float) -> list[list[int]]:
    """split_train_val's indices (seed 0), train then val, each in file order."""
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_val = round(val_fraction * n)
    return [sorted(permutation[n_val:].tolist()), sorted(permutation[:n_val].tolist())]


def test_augmentation_keeps_labels_and_shapes_and_crops_a_black_padded_window(
    tmp_path: Path,
) -> None:
    _write_batches(tmp_path)
    bench = load_benchmark("cifar10", tmp_path, checksums=SKIP_CHECKSUMS)
    assert bench.augment is not None
    x, y = bench.train.x[:16], bench.train.y[:16]
    out_x, out_y = bench.augment(x, y, torch.Generator().manual_seed(3))
    assert out_x.shape == x.shape and out_x.dtype == x.dtype
    torch.testing.assert_close(out_y, y, rtol=0, atol=0)
    padded = torch.nn.functional.pad(denormalise("cifar10", x), (4, 4, 4, 4))  # black = 0
    out = denormalise("cifar10", out_x)
    flips = 0
    for image, source in zip(out, padded, strict=True):
        windows = [
            window
            for top in range(9)
            for left in range(9)
            for window in (
                source[:, top : top + 32, left : left + 32],
                source[:, top : top + 32, left : left + 32].flip(-1),
            )
        ]
        matches = [i for i, w in enumerate(windows) if torch.allclose(image, w, atol=1e-5)]
        assert matches, "an augmented image is no (flipped) window of the padded original"
        flips += matches[0] % 2
    assert 0 < flips < len(out)  # both flipped and unflipped images in 16 draws


def _results(benchmark: str, rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    pairs = [
        {
            "method": method,
            "seed": 0,
            "train_seconds": 60.0,
            "selection_seconds": 0.0,
            "rows": [
                {
                    "key": method,
                    "label": method,
                    "scale": None,
                    "scale_source": None,
                    "test_seconds": 1.0,
                    "forward_passes": 1,
                    "metrics": metrics,
                }
            ],
        }
        for method, metrics in rows.items()
    ]
    results: dict[str, Any] = {"pairs": pairs, "config": {"benchmark": benchmark}}
    return {**results, "summary": summarize(results)}


def test_report_puts_the_papers_cifar_rows_beside_ours() -> None:
    metrics = {"nll": 0.5, "accuracy": 0.8, "ece": 0.05, "brier": 0.3}
    table = main_table(_results("cifar10", {"tradi": metrics, "mcp": metrics}))
    header, _, tradi_line, mcp_line = table.splitlines()
    assert header.split(" | ")[1:4] == ["NLL", "accuracy %", "ECE"]
    assert "0.5000 (0.205)" in tradi_line and "80.00 (95.29)" in tradi_line
    assert "(" not in mcp_line.split(" | ")[1]  # the paper has no MCP row for CIFAR-10


def test_shipped_cifar10_config_runs_the_papers_methods_on_a_cpu_budget() -> None:
    config = load_config("cifar10")
    assert config.benchmark == "cifar10" and config.model.name == "resnet20"
    methods = {"mcp", "temperature_scaling", "deep_ensembles", "mc_dropout", "swag", "tradi"}
    # issue 12's table, and the beyond-the-paper row (issue 19)
    assert methods | {"gaussian_perturbation", "ivon", "tradi_modes"} == set(config.methods)
    assert config.model.options["dropout"] > 0  # MC Dropout needs dropout to switch on
    assert config.device == "cpu"


@pytest.mark.parametrize("name", ["camvid-ood", "cifar10"])
def test_shipped_configs_say_how_to_run_at_paper_scale(name: str) -> None:
    text, _ = config_text(name)
    assert "PAPER-SCALE (GPU)" in text and "device: cuda" in text
