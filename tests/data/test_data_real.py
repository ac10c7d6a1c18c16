"""The shared datasets in $TRADI_DATA_DIR: checksums, counts and class counts from its README,
the published statistics, and the errors on a corrupted or incomplete copy. Skipped when the
data is absent, failed instead under TRADI_REQUIRE_DATA=1 (CI; the `real_data_dir` fixture of
tests/conftest.py)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tradi.data import (
    CAMVID_OOD_LABEL,
    KNOWN_CHECKSUMS,
    ChecksumMismatchError,
    DatasetNotFoundError,
    denormalise,
    load_benchmark,
    load_dataset,
)
from tradi.data.datasets import CAMVID_MEAN, CAMVID_STD

pytestmark = pytest.mark.data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


def test_every_shared_file_has_its_registered_checksum(real_data_dir: Path) -> None:
    files = sorted(p for p in real_data_dir.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) == 13  # 4 MNIST, 4 Fashion-MNIST, 3 notMNIST, 1 CIFAR-10, 1 CamVid
    for path in files:
        relative = path.relative_to(real_data_dir).as_posix()
        algorithm, _, expected = KNOWN_CHECKSUMS[relative].partition(":")
        assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == expected, relative


def test_mnist_counts_and_values(real_data_dir: Path) -> None:
    train = load_dataset("mnist", "train", real_data_dir)
    test = load_dataset("mnist", "test", real_data_dir)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert class_counts(train.y) == MNIST_TRAIN_COUNTS
    assert class_counts(test.y) == MNIST_TEST_COUNTS
    assert train.x.min() == -1.0 and train.x.max() == 1.0
    pixels = denormalise("mnist", train.x[:2000]) * 255
    torch.testing.assert_close(pixels, pixels.round(), atol=1e-4, rtol=0)  # exact grey levels


def test_fashion_mnist_and_notmnist_counts(real_data_dir: Path) -> None:
    assert class_counts(load_dataset("fashion_mnist", "train", real_data_dir).y) == [6000] * 10
    assert class_counts(load_dataset("fashion_mnist", "test", real_data_dir).y) == [1000] * 10
    idx = load_dataset("notmnist", "test", real_data_dir, source="idx")
    npz = load_dataset("notmnist", "test", real_data_dir, source="npz")
    assert class_counts(idx.y) == [1000] * 10
    assert torch.equal(idx.x, npz.x) and torch.equal(idx.y, npz.y)


def test_mnist_notmnist_benchmark(real_data_dir: Path) -> None:
    bench = load_benchmark("mnist-notmnist", real_data_dir, val_fraction=0.1, seed=0)
    assert (len(bench.train), len(bench.val), len(bench.test)) == (54000, 6000, 10000)
    assert bench.ood_test is not None and len(bench.ood_test) == 10000
    assert bench.ood_val is not None and len(bench.ood_val) == 10000
    assert class_counts(torch.cat([bench.train.y, bench.val.y])) == MNIST_TRAIN_COUNTS


def test_cifar10_counts_order_and_statistics(real_data_dir: Path) -> None:
    train = load_dataset("cifar10", "train", real_data_dir)
    test = load_dataset("cifar10", "test", real_data_dir)
    assert train.x.shape == (50000, 3, 32, 32) and test.x.shape == (10000, 3, 32, 32)
    assert class_counts(train.y) == [5000] * 10 and class_counts(test.y) == [1000] * 10
    assert train.y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # official order
    std, mean = torch.std_mean(denormalise("cifar10", train.x), dim=(0, 2, 3))
    np.testing.assert_allclose(mean.tolist(), [0.4913, 0.4821, 0.4465], atol=2e-4)  # README
    np.testing.assert_allclose(std.tolist(), [0.2452, 0.2428, 0.2606], atol=2e-4)


def test_camvid_counts_labels_and_statistics(real_data_dir: Path) -> None:
    splits = {s: load_dataset("camvid", s, real_data_dir) for s in ("train", "val", "test")}
    assert {s: tuple(v.x.shape) for s, v in splits.items()} == {
        "train": (367, 3, 90, 120),
        "val": (101, 3, 90, 120),
        "test": (233, 3, 90, 120),
    }
    for split in splits.values():
        assert split.y.unique().tolist() == list(range(12))
    readme_means = {"train": (0.412, 0.425, 0.433), "val": (0.314, 0.333, 0.348),
                    "test": (0.380, 0.390, 0.396)}  # fmt: skip
    for name, split in splits.items():
        pixels = denormalise("camvid", split.x)
        np.testing.assert_allclose(pixels.mean(dim=(0, 2, 3)), readme_means[name], atol=6e-4)
    std, mean = torch.std_mean(denormalise("camvid", splits["train"].x).double(), dim=(0, 2, 3))
    np.testing.assert_allclose(mean.tolist(), CAMVID_MEAN, atol=1e-4)
    np.testing.assert_allclose(std.tolist(), CAMVID_STD, atol=1e-4)


def test_camvid_ood_benchmark(real_data_dir: Path) -> None:
    bench = load_benchmark("camvid-ood", real_data_dir)
    raw_test = load_dataset("camvid", "test", real_data_dir).y
    assert torch.equal(bench.test.y == CAMVID_OOD_LABEL, raw_test == 9)
    assert int((bench.test.y == CAMVID_OOD_LABEL).sum()) > 0
    assert bench.train.y.unique().tolist() == [*range(10), 255]
    assert bench.class_weights is not None and bench.class_weights.shape == (10,)


def mirror_with_copy(source: Path, target: Path, copied: str) -> Path:
    """A data dir of symlinks to ``source`` except ``copied``, a real (modifiable) copy."""
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            if path.relative_to(source).as_posix() == copied:
                shutil.copyfile(path, link)
            else:
                link.symlink_to(path)
    return target / copied


def test_corrupted_copy_names_the_file_and_the_mismatch(
    real_data_dir: Path, tmp_path: Path
) -> None:
    copy = mirror_with_copy(real_data_dir, tmp_path, "mnist/t10k-labels-idx1-ubyte.gz")
    data = bytearray(copy.read_bytes())
    data[100] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as info:
        load_dataset("mnist", "test", tmp_path)
    message = str(info.value)
    assert str(copy) in message
    assert (
        "expected sha256 f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        in message
    )
    assert f"got {hashlib.sha256(bytes(data)).hexdigest()}" in message


def test_missing_file_names_where_to_put_it(real_data_dir: Path, tmp_path: Path) -> None:
    copy = mirror_with_copy(real_data_dir, tmp_path, "notmnist/t10k-images-idx3-ubyte.gz")
    copy.unlink()
    (tmp_path / "notmnist" / "notmnist_small.npz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("notmnist", "test", tmp_path)
    message = str(info.value)
    assert str(copy) in message
    assert str(tmp_path / "notmnist" / "notmnist_small.npz") in message
    assert str(tmp_path / "notmnist" / "t10k-labels-idx1-ubyte.gz") not in message
