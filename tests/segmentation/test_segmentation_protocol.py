"""CamVid-OOD's protocol on hand-made label maps, read through both file layouts: pedestrian
never trained and OOD at test, unlabelled ignored, the loss blind to both; ENet at 90 x 120."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tradi.data import load_benchmark
from tradi.experiments.runner import loss_function
from tradi.models import build_model

SKIP_CHECKSUMS = {"camvid/camvid.npz": None, "camvid/CamVid": None}
PEDESTRIAN, BICYCLIST, UNLABELLED = 9, 10, 11
# SegNet classes 0..11 -> the benchmark's: known classes keep their order with Bicyclist moved
# to 9; pedestrian is ignored (255) in train/val and OOD (10) at test; unlabelled is ignored.
TRAIN_TABLE = {**{c: c for c in range(9)}, PEDESTRIAN: 255, BICYCLIST: 9, UNLABELLED: 255}
TEST_TABLE = {**TRAIN_TABLE, PEDESTRIAN: 10}


def _label_maps(seed: int, n: int) -> np.ndarray:
    """n 4 x 6 maps holding every SegNet value 0..11 (so every known class has a frequency)."""
    rng = np.random.default_rng(seed)
    maps = np.stack([rng.permutation(np.arange(24) % 12).reshape(4, 6) for _ in range(n)])
    return maps.astype(np.uint8)


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 4, 6, 3), dtype=np.uint8)


SPLITS = {"train": 3, "val": 2, "test": 2}


def _arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {s: (_images(i, n), _label_maps(10 + i, n)) for i, (s, n) in enumerate(SPLITS.items())}


def _write_npz(root: Path) -> None:
    (root / "camvid").mkdir(parents=True)
    arrays = {}
    for split, (x, y) in _arrays().items():
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    np.savez_compressed(root / "camvid" / "camvid.npz", **arrays)


def _write_png_folders(root: Path) -> None:
    """SegNet's layout: <split>/, <split>annot/ and <split>.txt naming image and label map."""
    folder = root / "camvid" / "CamVid"
    for split, (x, y) in _arrays().items():
        (folder / split).mkdir(parents=True)
        (folder / f"{split}annot").mkdir()
        lines = []
        for index in range(len(x)):
            name = f"{split}_{index:03d}.png"
            Image.fromarray(x[index]).save(folder / split / name)
            Image.fromarray(y[index], mode="L").save(folder / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")


def _mapped(labels: np.ndarray, table: dict[int, int]) -> torch.Tensor:
    return torch.from_numpy(np.vectorize(table.__getitem__)(labels)).long()


@pytest.mark.parametrize("write", [_write_npz, _write_png_folders], ids=["npz", "png"])
def test_pedestrian_is_unseen_in_training_and_ood_at_test(
    tmp_path: Path, write: Callable[[Path], None]
) -> None:
    write(tmp_path)
    bench = load_benchmark("camvid-ood", tmp_path, checksums=SKIP_CHECKSUMS)
    raw = _arrays()
    torch.testing.assert_close(bench.train.y, _mapped(raw["train"][1], TRAIN_TABLE))
    torch.testing.assert_close(bench.val.y, _mapped(raw["val"][1], TRAIN_TABLE))
    torch.testing.assert_close(bench.test.y, _mapped(raw["test"][1], TEST_TABLE))
    assert (bench.num_classes, bench.ood_label, bench.ignore_index) == (10, 10, 255)
    assert bench.class_names[9] == "Bicyclist" and "Pedestrian" not in bench.class_names
    assert bench.input_shape == (3, 4, 6)
    # SegNet's median-frequency weights, recomputed with NumPy on the known classes of train
    y = bench.train.y.numpy().reshape(3, -1)
    labelled = (y < 10).sum(axis=1)
    freq = np.array([(y == c).sum() / labelled[(y == c).any(axis=1)].sum() for c in range(10)])
    np.testing.assert_allclose(bench.class_weights.numpy(), np.median(freq) / freq, rtol=1e-6)


def test_the_loss_never_sees_pedestrian_or_unlabelled_pixels(tmp_path: Path) -> None:
    _write_npz(tmp_path)
    bench = load_benchmark("camvid-ood", tmp_path, checksums=SKIP_CHECKSUMS)
    raw = torch.from_numpy(_arrays()["train"][1]).long()
    logits = torch.randn(3, 10, 4, 6, requires_grad=True)
    loss_function(bench)(logits, bench.train.y).backward()
    assert logits.grad is not None
    blind = (raw == PEDESTRIAN) | (raw == UNLABELLED)
    assert torch.all(logits.grad.movedim(1, -1)[blind] == 0)
    assert torch.all(logits.grad.movedim(1, -1)[~blind].abs().sum(dim=-1) > 0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """ENet's many small convolutions run several times slower with threads fighting over a
    busy machine's cores than on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_enet_at_camvid_size_keeps_the_shape_and_trains_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_model("enet", 10, (3, 90, 120), dropout=0.1)
    x = torch.randn(2, 3, 90, 120)
    labels = torch.randint(0, 10, (2, 90, 120))
    labels[:, :10] = 255
    logits = model(x)
    assert logits.shape == (2, 10, 90, 120)
    torch.nn.functional.cross_entropy(logits, labels, ignore_index=255).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert sum(p.grad.abs().sum() > 0 for p in model.parameters()) == len(list(model.parameters()))
