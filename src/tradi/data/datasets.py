"""Datasets as normalised tensors in memory, one `load_dataset` for all of them.

These sets are small enough to hold whole (CIFAR-10 train is the largest: 50,000 x 3 x 32 x 32
float32 = 614 MB), which keeps training loops simple and fast on CPU. Each dataset can come in
more than one file layout; ``source="auto"`` takes the original publisher's format when it is
present (lossless CIFAR-10 batches, full-size CamVid PNGs) and the npz of the shared data
otherwise.

Normalisation (TRADI.md §4): MNIST-like sets to mean 0.5, std 0.5 (values in [-1, 1]); CIFAR-10
and CamVid per channel with their training-set statistics; StreetHazards and BDD100K with the
ImageNet statistics, as hendrycks/anomaly-seg's dataset.py does. Those two are large (720 x
1280 images): ``image_size`` resizes them while they are read, one image at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tradi.data.files import (
    DOWNLOADS,
    MANUAL_SOURCES,
    Archive,
    DatasetNotFoundError,
    download,
    resolve_data_dir,
    verify,
)
from tradi.data.formats import (
    Size,
    read_bdd_split,
    read_camvid_split,
    read_cifar_batch,
    read_idx,
    read_streethazards_split,
)

DatasetName = Literal[
    "digits", "mnist", "fashion_mnist", "notmnist", "cifar10", "camvid", "streethazards", "bdd100k"
]
SplitName = Literal["train", "val", "test"]
SourceName = Literal["auto", "idx", "npz", "batches", "png"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
#: The datasets `load_dataset` can resize while reading (``image_size``).
RESIZABLE = ("streethazards", "bdd100k")

# Official CIFAR-10 training-set statistics (the JPEG copy in the shared data is within 0.002).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# SegNet CamVid train split (367 images) at 90 x 120; area downsampling keeps the mean.
CAMVID_MEAN = (0.4120, 0.4253, 0.4328)
CAMVID_STD = (0.2977, 0.3019, 0.2980)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.5,), (0.5,)),
    "mnist": ((0.5,), (0.5,)),
    "fashion_mnist": ((0.5,), (0.5,)),
    "notmnist": ((0.5,), (0.5,)),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "camvid": (CAMVID_MEAN, CAMVID_STD),
    "streethazards": (IMAGENET_MEAN, IMAGENET_STD),
    "bdd100k": (IMAGENET_MEAN, IMAGENET_STD),
}

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(d) for d in range(10)),
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "notmnist": tuple("ABCDEFGHIJ"),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
    "camvid": (
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist", "Unlabelled",
    ),
    # file value v is class v - 1 (hendrycks/anomaly-seg create_dataset.py, dataset.py)
    "streethazards": (
        "unlabeled", "building", "fence", "other", "pedestrian", "pole", "road line",
        "road", "sidewalk", "vegetation", "car", "wall", "traffic sign", "anomaly",
    ),
    # BDD100K train ids 0-18 (the Cityscapes training classes; create_bdd_dataset.py)
    "bdd100k": (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class TensorSplit(Dataset[tuple[Tensor, Tensor]]):
    """Inputs ``x`` [N, C, H, W] float32 and targets ``y`` ([N] or [N, H, W] int64).

    A map-style dataset; indexing with a tensor of indices returns a whole batch, so
    ``DataLoader(split, sampler=BatchSampler(RandomSampler(split), 128, False), batch_size=None)``
    batches without per-sample collation.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    def subset(self, indices: Tensor) -> TensorSplit:
        return TensorSplit(self.x[indices], self.y[indices])


Reader = Callable[[Path, Sequence[str]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Layout:
    """One way a dataset split can be stored: entries (each a tuple of alternative relative
    paths, best first) and the reader that turns the chosen paths into arrays."""

    source: str
    entries: tuple[tuple[str, ...], ...]
    read: Reader


def _idx_layout(folder: str, prefix: str) -> _Layout:
    entries = tuple(
        (f"{folder}/{prefix}-{kind}.gz", f"{folder}/{prefix}-{kind}")
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )
    return _Layout(
        "idx",
        entries,
        lambda root, paths: (read_idx(root / paths[0]), read_idx(root / paths[1]).astype(np.int64)),
    )


def _npz_layout(path: str, x_key: str, y_key: str) -> _Layout:
    def read(root: Path, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        with np.load(root / paths[0], allow_pickle=False) as arrays:
            return arrays[x_key], arrays[y_key].astype(np.int64)

    return _Layout("npz", ((path,),), read)


def _cifar_batches_layout(split: str) -> _Layout:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]

    def read(root: Path, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [read_cifar_batch(root / path) for path in paths]
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    return _Layout(
        "batches", tuple((f"cifar10/cifar-10-batches-py/{name}",) for name in names), read
    )


#: The splits each dataset's publisher ships; a validation set is carved from train otherwise.
_OFFICIAL_SPLITS: dict[str, tuple[str, ...]] = {
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "notmnist": ("test",),
    "cifar10": ("train", "test"),
    "camvid": ("train", "val", "test"),
    "streethazards": ("train", "val", "test"),
    "bdd100k": ("train", "val"),
}


def _layouts(name: str, split: str, size: Size | None = None) -> list[_Layout]:
    """Every layout that can hold ``name``/``split``, preferred first."""
    official = _OFFICIAL_SPLITS[name]
    if split not in official:
        raise ValueError(
            f"{name} has no {split!r} split (it has {', '.join(official)}); "
            "carve a validation set from train with split_train_val"
        )
    prefix = "train" if split == "train" else "t10k"
    if name in ("mnist", "fashion_mnist"):
        return [_idx_layout(name, prefix)]
    if name == "notmnist":
        return [_idx_layout(name, prefix), _npz_layout("notmnist/notmnist_small.npz", "x", "y")]
    if name == "cifar10":
        return [
            _cifar_batches_layout(split),
            _npz_layout("cifar10/cifar10.npz", f"x_{split}", f"y_{split}"),
        ]
    if name == "camvid":
        npz = _npz_layout("camvid/camvid.npz", f"x_{split}", f"y_{split}")
        return [_png_layout(name, split, size), npz]
    return [_png_layout(name, split, size)]


def _png_layout(name: str, split: str, size: Size | None) -> _Layout:
    """The publisher's PNG folders of a segmentation set (camvid, streethazards, bdd100k);
    ``size`` resizes streethazards and bdd100k while reading (camvid is read at its size)."""
    if name == "streethazards":
        tar = "streethazards/test" if split == "test" else "streethazards/train"
        return _Layout(
            "png",
            ((tar,),),
            lambda root, paths: read_streethazards_split(root / paths[0], split, size),
        )
    if name == "bdd100k":
        return _Layout(
            "png",
            (("bdd100k/seg",),),
            lambda root, paths: read_bdd_split(root / paths[0], split, size),
        )
    return _Layout(
        "png",
        (("camvid/CamVid",),),
        lambda root, paths: read_camvid_split(root / paths[0], split),
    )


def _download_key(relative_path: str) -> str | None:
    """The `DOWNLOADS` entry that provides a file: the file itself or a folder holding it."""
    parts = relative_path.split("/")
    candidates = ("/".join(parts[:end]) for end in range(len(parts), 0, -1))
    return next((key for key in candidates if key in DOWNLOADS), None)


def _describe_missing(root: Path, layout: _Layout) -> str:
    lines = []
    for alternatives in layout.entries:
        if any((root / path).exists() for path in alternatives):
            continue
        where = " (or decompressed: ".join(str(root / path) for path in alternatives)
        where += ")" * (len(alternatives) - 1)
        key = _download_key(alternatives[0])
        source = None if key is None else DOWNLOADS[key]
        url = source.url if isinstance(source, Archive) else source
        url = url or MANUAL_SOURCES.get(alternatives[0])
        lines.append(f"    {where}" + (f"  <- {url}" if url else ""))
    return "\n".join(lines)


def _choose_layout(
    name: str, split: str, root: Path, source: str, fetch: bool, size: Size | None = None
) -> tuple[_Layout, list[str]]:
    """The first layout whose files are all present (after downloading them if ``fetch``)."""
    layouts = [lay for lay in _layouts(name, split, size) if source in ("auto", lay.source)]
    if not layouts:
        raise ValueError(f"{name} cannot be read from source {source!r}")

    def present(layout: _Layout) -> list[str] | None:
        chosen = [next((p for p in alts if (root / p).exists()), None) for alts in layout.entries]
        return None if None in chosen else [p for p in chosen if p is not None]

    for layout in layouts:
        if (paths := present(layout)) is not None:
            return layout, paths
    if fetch:
        for layout in layouts:
            missing = [a[0] for a in layout.entries if not any((root / p).exists() for p in a)]
            keys = [key for path in missing if (key := _download_key(path)) is not None]
            if len(keys) < len(missing):
                continue
            for key in dict.fromkeys(keys):  # an archive covers several files: fetch it once
                download(root, key)
            if (paths := present(layout)) is not None:
                return layout, paths
    options = "\n".join(
        f"  {layout.source} layout, missing:\n{_describe_missing(root, layout)}"
        for layout in layouts
    )
    hint = "" if fetch else "\nor pass download=True (CLI: --download) to fetch the official files."
    raise DatasetNotFoundError(
        f"{name} ({split}) not found in the data directory {root}. "
        f"Put the files of one of these layouts at exactly these paths:\n{options}{hint}"
    )


def load_digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (values 0..16), split deterministically: the first
    two thirds of each class in file order are ``train``, the rest ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"digits has no {split!r} split (it has train, test)")
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    in_train = np.zeros(labels.size, dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        in_train[members[: 2 * len(members) // 3]] = True
    keep = in_train if split == "train" else ~in_train
    return digits.images[keep].astype(np.uint8), labels[keep]


def to_tensor_split(name: str, images: np.ndarray, labels: np.ndarray) -> TensorSplit:
    """uint8 images [N, H, W] or [N, H, W, C] -> normalised float32 [N, C, H, W]."""
    if images.ndim == 3:
        images = images[:, :, :, None]
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(torch.float32)
    x.div_(16.0 if name == "digits" else 255.0)
    mean, std = NORMALISATION[name]
    x.sub_(torch.tensor(mean).view(-1, 1, 1)).div_(torch.tensor(std).view(-1, 1, 1))
    return TensorSplit(x, torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64))


def denormalise(name: DatasetName | str, x: Tensor) -> Tensor:
    """Undo `load_dataset`'s normalisation: pixel values in [0, 1] (figures, checks)."""
    mean, std = NORMALISATION[name]
    return x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)


def load_dataset(
    name: DatasetName | str,
    split: SplitName | str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    source: SourceName | str = "auto",
    download: bool = False,
    checksums: Mapping[str, str | None] | None = None,
    image_size: Size | None = None,
) -> TensorSplit:
    """Load one split of a dataset as normalised tensors, after verifying its files.

    ``data_dir`` falls back to ``$TRADI_DATA_DIR`` and holds one folder per dataset (``mnist/``,
    ``fashion_mnist/``, ``notmnist/``, ``cifar10/``, ``camvid/``, ``streethazards/``,
    ``bdd100k/``), as ../shared/data does. ``source`` forces a layout ("idx", "npz", "batches",
    "png"); ``download`` fetches missing files from the official sources; ``checksums``
    overrides known checksums (see `verify`). ``image_size`` (H, W) resizes StreetHazards and
    BDD100K images while reading them (area averaging; labels nearest); other datasets refuse
    it (ValueError). "digits" is embedded and needs no data directory.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if image_size is not None and name not in RESIZABLE:
        raise ValueError(
            f"{name} is read at its stored size; image_size applies to {', '.join(RESIZABLE)}"
        )
    if name == "digits":
        return to_tensor_split(name, *load_digits_arrays(split))
    root = resolve_data_dir(data_dir)
    layout, paths = _choose_layout(name, split, root, source, download, image_size)
    for path in paths:
        verify(root, path, checksums)
    return to_tensor_split(name, *layout.read(root, paths))
