"""Loading every format from tiny fixture files written in that format: parsing, layouts,
checksums, errors, the checksum cache, and the benchmarks built on them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from tradi.data import (
    ChecksumMismatchError,
    DatasetNotFoundError,
    compute_checksum,
    denormalise,
    load_benchmark,
    load_dataset,
    random_horizontal_flip,
)
from tradi.data import files as data_files
from tradi.data.datasets import CIFAR10_MEAN, CIFAR10_STD
from tradi.data.formats import read_idx


@dataclass
class FixtureData:
    """A data directory of tiny files, their checksums and the arrays written into them."""

    root: Path
    checksums: dict[str, str | None] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self, relative_path: str) -> None:
        digest = hashlib.sha256((self.root / relative_path).read_bytes()).hexdigest()
        self.checksums[relative_path] = f"sha256:{digest}"


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX as published: zero bytes, type 0x08 (uint8), ndim, big-endian int32 dims, data."""
    header = struct.pack(f">BBBB{array.ndim}i", 0, 0, 0x08, array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def git_tree_id_by_git(folder: Path) -> str:
    """The tree id git itself gives ``folder`` (an independent check of tradi's hashing)."""
    repo = folder.parent
    env = {**os.environ, "GIT_DIR": str(repo / ".fixture-git"), "GIT_WORK_TREE": str(repo)}
    for command in (["init", "-q"], ["add", folder.name]):
        subprocess.run(["git", *command], cwd=repo, env=env, check=True)
    tree = subprocess.run(
        ["git", "write-tree"], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    return subprocess.run(
        ["git", "rev-parse", f"{tree}:{folder.name}"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _write_mnist_like(data: FixtureData, folder: str, splits: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    (data.root / folder).mkdir()
    for prefix, n in splits.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            relative = f"{folder}/{prefix}-{kind}.gz"
            write_idx(data.root / relative, array)
            data.record(relative)
        data.arrays[f"{folder}/{prefix}/x"] = images
        data.arrays[f"{folder}/{prefix}/y"] = labels


def _write_cifar(data: FixtureData, rng: np.random.Generator) -> None:
    folder = data.root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for split, names, per_batch in (
        ("train", [f"data_batch_{i}" for i in range(1, 6)], 4),
        ("test", ["test_batch"], 5),
    ):
        rows = rng.integers(0, 256, (len(names) * per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, len(rows)).tolist()
        for index, name in enumerate(names):
            part = slice(index * per_batch, (index + 1) * per_batch)
            batch = {b"batch_label": name.encode(), b"labels": labels[part], b"data": rows[part]}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
            relative = f"cifar10/cifar-10-batches-py/{name}"
            digest = hashlib.md5((data.root / relative).read_bytes()).hexdigest()
            data.checksums[relative] = f"md5:{digest}"
        data.arrays[f"cifar10/batches/{split}/rows"] = rows
        data.arrays[f"cifar10/batches/{split}/y"] = np.asarray(labels)
    npz = {
        "x_train": rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 7),
        "x_test": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 3),
    }
    np.savez_compressed(data.root / "cifar10" / "cifar10.npz", **npz)
    data.record("cifar10/cifar10.npz")
    data.arrays.update({f"cifar10/npz/{key}": value for key, value in npz.items()})


def _write_camvid(data: FixtureData, rng: np.random.Generator) -> None:
    from PIL import Image

    folder = data.root / "camvid" / "CamVid"
    npz = {}
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        (folder / split).mkdir(parents=True)
        (folder / f"{split}annot").mkdir()
        names = [f"seq_{split}_{i:03d}.png" for i in range(n)][::-1]  # listed out of sort order
        images = rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8)
        labels = rng.integers(0, 12, (n, 6, 8), dtype=np.uint8)
        labels[:, 0, :4] = np.arange(4)[None, :] + 8  # 8, 9, 10, 11 occur in every split
        lines = []
        for name, image, label in zip(names, images, labels, strict=True):
            Image.fromarray(image, mode="RGB").save(folder / split / name)
            Image.fromarray(label, mode="L").save(folder / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
        npz[f"x_{split}"], npz[f"y_{split}"] = images, labels
        npz[f"names_{split}"] = np.asarray(names)
    data.checksums["camvid/CamVid"] = f"gittree:{git_tree_id_by_git(folder)}"
    np.savez_compressed(data.root / "camvid" / "camvid.npz", **npz)
    data.record("camvid/camvid.npz")
    data.arrays.update({f"camvid/{key}": value for key, value in npz.items()})


@pytest.fixture
def fixture_data(tmp_path: Path) -> FixtureData:
    """Every dataset in every supported layout, a few samples each, under tmp_path/data."""
    data = FixtureData(tmp_path / "data")
    data.root.mkdir()
    _write_mnist_like(data, "mnist", {"train": 20, "t10k": 10}, seed=1)
    _write_mnist_like(data, "fashion_mnist", {"train": 10, "t10k": 10}, seed=2)
    _write_mnist_like(data, "notmnist", {"t10k": 10}, seed=3)
    np.savez_compressed(
        data.root / "notmnist" / "notmnist_small.npz",
        x=data.arrays["notmnist/t10k/x"],
        y=data.arrays["notmnist/t10k/y"].astype(np.int64),
    )
    data.record("notmnist/notmnist_small.npz")
    rng = np.random.default_rng(4)
    _write_cifar(data, rng)
    _write_camvid(data, rng)
    return data


def mnist_normalised(images: np.ndarray) -> torch.Tensor:
    """Independent reference: [N, 28, 28] uint8 -> [N, 1, 28, 28] with mean 0.5, std 0.5."""
    return torch.from_numpy((images.astype(np.float32) / 255.0 - 0.5) / 0.5)[:, None]


def test_idx_gzipped_and_decompressed_give_the_written_arrays(fixture_data: FixtureData) -> None:
    root, checksums = fixture_data.root, fixture_data.checksums
    split = load_dataset("mnist", "train", root, checksums=checksums)
    torch.testing.assert_close(split.x, mnist_normalised(fixture_data.arrays["mnist/train/x"]))
    assert split.y.dtype == torch.int64
    assert split.y.tolist() == fixture_data.arrays["mnist/train/y"].tolist()

    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        gz = root / "mnist" / f"train-{kind}.gz"
        raw = gz.with_suffix("")
        raw.write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
        checksums[f"mnist/train-{kind}"] = f"md5:{hashlib.md5(raw.read_bytes()).hexdigest()}"
    from_raw = load_dataset("mnist", "train", root, checksums=checksums)
    torch.testing.assert_close(from_raw.x, split.x)
    torch.testing.assert_close(from_raw.y, split.y)


def test_idx_header_is_checked(tmp_path: Path) -> None:
    write_idx(tmp_path / "ok.gz", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert read_idx(tmp_path / "ok.gz").tolist() == np.arange(24).reshape(2, 3, 4).tolist()
    (tmp_path / "bad_magic").write_bytes(b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad_magic")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="5 values"):
        read_idx(tmp_path / "short")


def test_notmnist_idx_and_npz_agree(fixture_data: FixtureData) -> None:
    root, checksums = fixture_data.root, fixture_data.checksums
    idx = load_dataset("notmnist", "test", root, source="idx", checksums=checksums)
    npz = load_dataset("notmnist", "test", root, source="npz", checksums=checksums)
    torch.testing.assert_close(idx.x, npz.x)
    torch.testing.assert_close(idx.y, npz.y)
    with pytest.raises(ValueError, match="no 'train' split"):
        load_dataset("notmnist", "train", root, checksums=checksums)


def test_cifar_python_batches_are_preferred_and_decoded_plane_by_plane(
    fixture_data: FixtureData,
) -> None:
    root, checksums, arrays = fixture_data.root, fixture_data.checksums, fixture_data.arrays
    train = load_dataset("cifar10", "train", root, checksums=checksums)
    rows = arrays["cifar10/batches/train/rows"]
    assert train.x.shape == (20, 3, 32, 32)
    assert train.y.tolist() == arrays["cifar10/batches/train/y"].tolist()
    pixels = (denormalise("cifar10", train.x) * 255).round().to(torch.uint8).numpy()
    # Row layout: 1024 red values, 1024 green, 1024 blue, each plane row-major.
    for n, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (19, 2, 31, 30)]:
        assert pixels[n, c, h, w] == rows[n, c * 1024 + h * 32 + w]

    npz = load_dataset("cifar10", "test", root, source="npz", checksums=checksums)
    expected = arrays["cifar10/npz/x_test"].transpose(0, 3, 1, 2)
    assert np.array_equal((denormalise("cifar10", npz.x) * 255).round().numpy(), expected)
    for c, (mean, std) in enumerate(
        zip((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), strict=True)
    ):
        reference = (expected[:, c].astype(np.float32) / 255 - mean) / std
        np.testing.assert_allclose(npz.x[:, c].numpy(), reference, atol=1e-5)


def test_camvid_png_folders_follow_the_list_files(fixture_data: FixtureData) -> None:
    root, checksums, arrays = fixture_data.root, fixture_data.checksums, fixture_data.arrays
    for split in ("train", "val", "test"):
        png = load_dataset("camvid", split, root, source="png", checksums=checksums)
        npz = load_dataset("camvid", split, root, source="npz", checksums=checksums)
        assert png.y.tolist() == arrays[f"camvid/y_{split}"].tolist()
        pixels = (denormalise("camvid", png.x) * 255).round().numpy()
        assert np.array_equal(pixels, arrays[f"camvid/x_{split}"].transpose(0, 3, 1, 2))
        torch.testing.assert_close(png.x, npz.x)


def test_folder_checksum_is_gits_tree_id(tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "tree"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "sub.txt").write_bytes(b"sorts before the folder 'sub/'")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    (folder / "sub" / "deeper" / "c").write_bytes(b"")
    (folder / "empty" / "nested").mkdir(parents=True)  # git records no empty folders
    (folder / ".DS_Store").write_bytes(b"left out, and not added to git below")
    tradi_id = compute_checksum(folder, "gittree")
    (folder / ".DS_Store").unlink()
    assert tradi_id == git_tree_id_by_git(folder)


def test_corrupt_file_names_the_file_and_both_digests(fixture_data: FixtureData) -> None:
    path = fixture_data.root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    corrupted = bytearray(path.read_bytes())
    corrupted[-1] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    expected = fixture_data.checksums["mnist/t10k-labels-idx1-ubyte.gz"].split(":")[1]
    got = hashlib.sha256(bytes(corrupted)).hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        load_dataset("mnist", "test", fixture_data.root, checksums=fixture_data.checksums)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
    assert f"expected sha256 {expected}, got {got}" in str(info.value)


def test_missing_file_says_where_to_put_it(fixture_data: FixtureData) -> None:
    (fixture_data.root / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "train", fixture_data.root, checksums=fixture_data.checksums)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(fixture_data.root / "mnist" / "train-labels-idx1-ubyte.gz") in message
    assert "train-images" not in message  # only what is missing is listed
    assert "download=True" in message


@pytest.fixture
def serve() -> Iterator[dict[str, bytes]]:
    """A local HTTP server (no internet needed): put bytes at ``files[path]``; its base URL
    is ``files["base"]``."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    files["base"] = f"http://127.0.0.1:{server.server_address[1]}/".encode()
    yield files
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_offline_gives_a_clear_error(
    fixture_data: FixtureData, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/t10k-images-idx3-ubyte.gz"  # nobody listens
    monkeypatch.setitem(data_files.DOWNLOADS, "mnist/t10k-images-idx3-ubyte.gz", url)
    (fixture_data.root / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "test", fixture_data.root, download=True)
    message = str(info.value)
    assert f"could not download {url}" in message
    assert str(fixture_data.root / "mnist" / "t10k-images-idx3-ubyte.gz") in message
    assert not list((fixture_data.root / "mnist").glob("tmp*"))  # no partial download left


def test_download_checks_the_known_checksum(
    fixture_data: FixtureData, monkeypatch: pytest.MonkeyPatch, serve: dict[str, bytes]
) -> None:
    name = "mnist/t10k-images-idx3-ubyte.gz"
    good = (fixture_data.root / name).read_bytes()
    (fixture_data.root / name).unlink()
    serve["good.gz"], serve["bad.gz"] = good, good[:-1] + bytes([good[-1] ^ 1])
    monkeypatch.setitem(data_files.KNOWN_CHECKSUMS, name, fixture_data.checksums[name])
    monkeypatch.setitem(data_files.DOWNLOADS, name, serve["base"].decode() + "bad.gz")
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch for http"):
        load_dataset("mnist", "test", fixture_data.root, download=True)
    assert not (fixture_data.root / name).exists()
    assert not list((fixture_data.root / "mnist").glob("tmp*"))
    monkeypatch.setitem(data_files.DOWNLOADS, name, serve["base"].decode() + "good.gz")
    test = load_dataset(
        "mnist", "test", fixture_data.root, download=True, checksums=fixture_data.checksums
    )
    assert (fixture_data.root / name).read_bytes() == good and len(test) == 10


def test_data_dir_comes_from_the_argument_or_the_environment(
    fixture_data: FixtureData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRADI_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="TRADI_DATA_DIR"):
        load_dataset("mnist", "test")
    monkeypatch.setenv("TRADI_DATA_DIR", str(fixture_data.root))
    from_env = load_dataset("mnist", "test", checksums=fixture_data.checksums)
    assert len(from_env) == 10


def test_checksums_are_computed_once_per_file_version(
    fixture_data: FixtureData, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real_hash = data_files._hash_file

    def counting_hash(path: Path, algorithm: str) -> str:
        hashed.append(path)
        return real_hash(path, algorithm)

    monkeypatch.setattr(data_files, "_hash_file", counting_hash)
    monkeypatch.setattr(data_files, "_DIGESTS", {})
    args = ("mnist", "test", fixture_data.root)
    load_dataset(*args, checksums=fixture_data.checksums)
    load_dataset(*args, checksums=fixture_data.checksums)
    assert len(hashed) == 2  # images and labels, hashed on the first load only
    labels = fixture_data.root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_dataset(*args, checksums=fixture_data.checksums)
    assert hashed[2:] == [labels]


def test_a_none_checksum_override_skips_verification(fixture_data: FixtureData) -> None:
    checksums = {**fixture_data.checksums, "notmnist/notmnist_small.npz": "sha256:" + "0" * 64}
    with pytest.raises(ChecksumMismatchError):
        load_dataset("notmnist", "test", fixture_data.root, source="npz", checksums=checksums)
    checksums["notmnist/notmnist_small.npz"] = None
    assert (
        len(load_dataset("notmnist", "test", fixture_data.root, source="npz", checksums=checksums))
        == 10
    )


def median_frequency_reference(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """NumPy re-computation of SegNet's weights, image by image."""
    class_pixels = np.zeros(num_classes)
    pixels_where_present = np.zeros(num_classes)
    for label_map in labels:
        labelled = np.isin(label_map, np.arange(num_classes)).sum()
        for c in range(num_classes):
            count = (label_map == c).sum()
            class_pixels[c] += count
            pixels_where_present[c] += labelled if count else 0
    frequency = class_pixels / pixels_where_present
    return np.median(frequency) / frequency


def test_camvid_ood_hides_pedestrians_in_training_and_marks_them_ood_at_test(
    fixture_data: FixtureData,
) -> None:
    bench = load_benchmark("camvid-ood", fixture_data.root, checksums=fixture_data.checksums)
    # SegNet labels -> benchmark labels: 0-8 kept, 9 (pedestrian) hidden, 10 -> 9, 11 ignored.
    train_map = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 255, 9, 255])
    test_map = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9, 255])
    arrays = fixture_data.arrays
    assert bench.train.y.numpy().tolist() == train_map[arrays["camvid/y_train"]].tolist()
    assert bench.val.y.numpy().tolist() == train_map[arrays["camvid/y_val"]].tolist()
    assert bench.test.y.numpy().tolist() == test_map[arrays["camvid/y_test"]].tolist()
    assert (bench.num_classes, bench.ood_label, bench.ignore_index) == (10, 10, 255)
    assert bench.task == "segmentation" and bench.input_shape == (3, 6, 8)
    assert "Pedestrian" not in bench.class_names and bench.class_names[9] == "Bicyclist"
    assert bench.class_weights is not None
    np.testing.assert_allclose(
        bench.class_weights.numpy(),
        median_frequency_reference(bench.train.y.numpy(), 10),
        rtol=1e-5,
    )
    assert bench.augment is random_horizontal_flip  # image and label map flipped together


def test_mnist_notmnist_declares_fashion_mnist_as_its_validation_ood_set(
    fixture_data: FixtureData,
) -> None:
    root, checksums = fixture_data.root, fixture_data.checksums
    bench = load_benchmark("mnist-notmnist", root, val_fraction=0.25, seed=3, checksums=checksums)
    assert (len(bench.train), len(bench.val), len(bench.test)) == (15, 5, 10)
    assert bench.ood_test is not None and bench.ood_val is not None
    torch.testing.assert_close(
        bench.ood_test.x, mnist_normalised(fixture_data.arrays["notmnist/t10k/x"])
    )
    torch.testing.assert_close(
        bench.ood_val.x, mnist_normalised(fixture_data.arrays["fashion_mnist/t10k/x"])
    )
    for path in (root / "fashion_mnist").iterdir():
        path.unlink()
    (root / "fashion_mnist").rmdir()
    with pytest.warns(UserWarning, match="no ood_val"):
        without = load_benchmark("mnist-notmnist", root, checksums=checksums)
    assert without.ood_val is None
    assert load_benchmark("mnist", root, checksums=checksums).ood_test is None


def test_cifar10_benchmark_pads_crops_with_black(fixture_data: FixtureData) -> None:
    bench = load_benchmark("cifar10", fixture_data.root, checksums=fixture_data.checksums)
    assert bench.input_shape == (3, 32, 32) and bench.ood_test is None
    assert bench.augment is not None
    white = torch.ones(64, 3, 32, 32)
    normalised_white = (white - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(
        CIFAR10_STD
    ).view(3, 1, 1)
    cropped, _ = bench.augment(normalised_white, torch.zeros(64), torch.Generator().manual_seed(1))
    pixels = denormalise("cifar10", cropped)
    # Every pixel is either an image pixel (1.0) or padding, which must be black (0.0).
    assert torch.all(
        torch.isclose(pixels, torch.ones(())) | torch.isclose(pixels, torch.zeros(()), atol=1e-6)
    )
    assert (pixels.abs() < 1e-6).any()


def test_download_unpacks_an_archive_and_refuses_escaping_paths(
    fixture_data: FixtureData,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    serve: dict[str, bytes],
) -> None:
    batches = fixture_data.root / "cifar10" / "cifar-10-batches-py"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    payload = archive.getvalue()
    serve["cifar-10-python.tar.gz"] = payload
    url = serve["base"].decode() + "cifar-10-python.tar.gz"
    md5 = f"md5:{hashlib.md5(payload).hexdigest()}"
    archive_entry = data_files.Archive(url, md5, "cifar-10-batches-py")
    monkeypatch.setitem(data_files.DOWNLOADS, "cifar10/cifar-10-batches-py", archive_entry)
    empty_root = tmp_path / "fresh"
    train = load_dataset(
        "cifar10",
        "train",
        empty_root,
        source="batches",
        download=True,
        checksums=fixture_data.checksums,
    )
    expected = load_dataset("cifar10", "train", fixture_data.root, checksums=fixture_data.checksums)
    torch.testing.assert_close(train.x, expected.x)

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../escaped")
        tar.addfile(info, io.BytesIO(b""))
    serve["cifar-10-python.tar.gz"] = evil.getvalue()
    archive_entry = data_files.Archive(url, None, "cifar-10-batches-py")
    monkeypatch.setitem(data_files.DOWNLOADS, "cifar10/cifar-10-batches-py", archive_entry)
    with pytest.raises(ValueError, match="unsafe path"):
        load_dataset("cifar10", "test", tmp_path / "other", source="batches", download=True)
    assert not (tmp_path / "other" / "escaped").exists()
