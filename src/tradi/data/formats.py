"""Readers for the published file formats, returning uint8 NumPy arrays.

They parse files that `tradi.data.files.verify` has already checked; this matters for the
CIFAR python batches, which are pickles: only files with a known digest are unpickled.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np

from tradi.data.files import DatasetNotFoundError

_IDX_UINT8 = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array of the shape in its header.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian int32.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        data = bytearray(stream.read())  # writable, so tensors can share its memory
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"{path} is not an IDX file: its first two bytes are not zero")
    type_code, ndim = data[2], data[3]
    if type_code != _IDX_UINT8:
        raise ValueError(f"{path}: IDX type code {type_code:#04x} is not uint8 (0x08)")
    header_size = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}i", data[4:header_size])
    values = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if values.size != math.prod(shape):
        raise ValueError(
            f"{path}: header says {shape} ({math.prod(shape)} values), file has {values.size}"
        )
    return values.reshape(shape)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python batch as images [N, 32, 32, 3] (RGB) and int64 labels [N].

    Each row of b"data" holds the red, green and blue 32x32 planes one after the other.
    """
    with path.open("rb") as stream:
        batch = pickle.load(stream, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return images.transpose(0, 2, 3, 1), labels


def read_camvid_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The SegNet CamVid layout: images [N, H, W, 3] and label maps [N, H, W], in the order of
    ``<split>.txt``, whose lines name an image and its label map (only the file names are used;
    the folders are always ``<split>/`` and ``<split>annot/``)."""
    try:
        from PIL import Image
    except ImportError as error:  # Pillow comes with matplotlib, a dependency.
        raise ImportError("reading CamVid PNG folders needs Pillow (pip install pillow)") from error
    names = [
        line.split()[0].replace("\\", "/").rsplit("/", 1)[-1]
        for line in (folder / f"{split}.txt").read_text().splitlines()
        if line.strip()
    ]
    images, labels = [], []
    for name in names:
        image_path, label_path = folder / split / name, folder / f"{split}annot" / name
        for path in (image_path, label_path):
            if not path.is_file():
                raise DatasetNotFoundError(f"{path} is listed in {split}.txt but missing")
        with Image.open(image_path) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        with Image.open(label_path) as label:
            # Class indices are the raw 8-bit values; converting modes would remap them.
            if label.mode not in ("L", "P"):
                raise ValueError(f"{label_path}: label maps must be 8-bit, got mode {label.mode}")
            labels.append(np.asarray(label, dtype=np.uint8))
    return np.stack(images), np.stack(labels)


Size = tuple[int, int]


def _read_pair(
    image_path: Path, label_path: Path, size: Size | None
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its 8-bit label map, resized to ``size`` (H, W) when given: area
    averaging for the image, nearest neighbour for the labels (class ids are never blended)."""
    from PIL import Image

    for path in (image_path, label_path):
        if not path.is_file():
            raise DatasetNotFoundError(f"{path} is missing")
    with Image.open(image_path) as image, Image.open(label_path) as label:
        if label.mode not in ("L", "P"):
            raise ValueError(f"{label_path}: label maps must be 8-bit, got mode {label.mode}")
        if image.size != label.size:
            raise ValueError(f"{image_path} is {image.size} but its labels are {label.size}")
        rgb = image.convert("RGB")
        if size is not None:
            rgb = rgb.resize(size[::-1], Image.Resampling.BOX)
            label = label.resize(size[::-1], Image.Resampling.NEAREST)
        return np.asarray(rgb, dtype=np.uint8), np.asarray(label, dtype=np.uint8)


def _stack_pairs(
    pairs: list[tuple[Path, Path]], size: Size | None, where: Path
) -> tuple[np.ndarray, np.ndarray]:
    if not pairs:
        raise DatasetNotFoundError(f"no images found under {where}")
    read = [_read_pair(image, label, size) for image, label in pairs]
    return np.stack([r[0] for r in read]), np.stack([r[1] for r in read])


#: StreetHazards folders per split, in its tar files (hendrycks/anomaly-seg, create_dataset.py):
#: ``streethazards_train.tar`` holds train/ (towns t1-3) and validation (t4), the test tar t5-6.
STREETHAZARDS_FOLDERS = {"train": "training", "val": "validation", "test": "test"}


def read_streethazards_split(
    folder: Path, split: str, size: Size | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """StreetHazards as published: ``images/<f>/<town>/<n>.png`` and the label map of the same
    name under ``annotations/<f>/``, with ``<f>`` = training, validation or test, inside the
    tar's ``train/`` or ``test/`` folder (``folder``). Order: towns, then files, sorted, as
    create_dataset.py writes its .odgt index. Labels are the raw file values (1-14)."""
    sub = STREETHAZARDS_FOLDERS[split]
    images = folder / "images" / sub
    pairs = [
        (path, folder / "annotations" / sub / path.relative_to(images))
        for path in sorted(images.glob("*/*.png"))
    ]
    return _stack_pairs(pairs, size, images)


def read_bdd_split(
    folder: Path, split: str, size: Size | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """BDD100K's 10K segmentation set as released (and mirrored in hendrycks/anomaly-seg's
    ``seg/``): ``images/<split>/<id>.jpg`` and ``labels/<split>/<id>_train_id.png`` (train ids
    0-18, 255 = unlabelled), ``split`` train or val, in sorted order of the image ids."""
    images = folder / "images" / split
    pairs = [
        (path, folder / "labels" / split / f"{path.stem}_train_id.png")
        for path in sorted(images.glob("*.jpg"))
    ]
    return _stack_pairs(pairs, size, images)
