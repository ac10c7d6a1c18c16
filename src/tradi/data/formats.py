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
