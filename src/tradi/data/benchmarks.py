"""Benchmarks: a dataset with its validation split, its OOD sets and its protocol, in one object.

Model selection (epochs, hyper-parameters, TRADI's scale) uses ``val`` and, for OOD choices,
only ``ood_val``: the test and OOD test sets are never looked at before the final evaluation
(the authors' code picked its epoch on the test set; TRADI.md §4).

Protocols
---------
digits (embedded, needs no files)
    scikit-learn's bundled 8x8 digits, digits 0-4 in-distribution (5 classes), digits 5-9 OOD.
    Unseen classes of the same domain make a near-OOD task: harder than MNIST vs notMNIST, so
    it exercises the uncertainty estimate rather than a trivial domain gap, and it runs offline
    in seconds, which makes it the default demo. Split: the first two thirds of each class in
    file order are train (then a seeded validation part is carved out), the rest test; the OOD
    test set is the test part of digits 5-9 (about as many images as the in-distribution test).
    ``far_ood_test``: the in-distribution test images with inverted intensities (x -> min + max
    - x), a declared far-OOD set beside the near-OOD one.
mnist
    MNIST, no OOD set.
mnist-notmnist
    MNIST; OOD test = the notMNIST sample (10,000 letters). ``ood_val`` = Fashion-MNIST test
    (10,000 images), the declared OOD set for any choice that needs OOD data; never notMNIST.
    If ``fashion_mnist/`` is absent, ``ood_val`` is None (with a warning).
cifar10
    CIFAR-10, no OOD set; ``augment`` = random crop (4 px black padding) + horizontal flip.
camvid-ood
    SegNet CamVid, 10 known classes. Pedestrian (SegNet class 9) is never trained: in train and
    val its pixels are ``ignore_index`` (255) like Unlabelled (11), and Bicyclist (10) becomes
    class 9. In test, pedestrian pixels carry ``ood_label`` (= 10, one past the known classes):
    they are the OOD pixels; Unlabelled stays 255. ``val`` is SegNet's own val split (101
    images), so ``val_fraction`` does not apply. ``class_weights`` are SegNet's median-frequency
    weights over the known classes of train; ``augment`` flips image and label map together.
streethazards
    StreetHazards (Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
    Settings", ICML 2022; hendrycks/anomaly-seg). Label files hold 1-14; the reference code
    subtracts 1 (dataset.py ``segm_transform``), giving 0 unlabeled, 1 building, 2 fence, 3 other,
    4 pedestrian, 5 pole, 6 road line, 7 road, 8 sidewalk, 9 vegetation, 10 car, 11 wall,
    12 traffic sign, 13 anomaly (create_dataset.py's class list; defaults.py ``OOD.out_labels =
    (13,)``). The 13 known classes are file values 1-13 -> classes 0-12: "unlabeled" is trained
    as a class, as the reference code does. The anomaly (file value 14) occurs in the test towns
    only (t5, t6) and is the OOD class there (``ood_label`` = 13); a file value 0 is ignored.
    ``val`` is the published validation town (t4). ``augment`` flips, as the reference does.
bdd-anomaly
    BDD-Anomaly (same paper): BDD100K's 10K segmentation set, train ids 0-18 (255 unlabelled,
    ignored). Motorcycle (17) and train (16) are the anomalies: every image holding one of their
    pixels leaves train and val and joins the test set, whose anomaly pixels carry ``ood_label``
    (= 17); the 17 known classes are train ids 0-15 and 18 (bicycle -> 16). Test = the anomalous
    images of BDD's train then val split, as create_bdd_dataset.py's anom.odgt collects them;
    train and val = BDD's train and val images without an anomaly. That script also moves images
    holding bicycles (its shifted label 20) out of training; the paper names motorcycle and
    train only, which is followed here.

The two anomaly benchmarks are large (720 x 1280 images): ``image_size`` (H, W) resizes them
while they are read. Their tables follow Hendrycks et al.'s conventions: AUPR and FPR95 with the
anomaly pixels positive.

OOD splits of classification benchmarks keep the OOD set's own labels (e.g. A-J for notMNIST):
they are never compared with predictions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor

from tradi._imports import import_object
from tradi.data.augment import Augment, CropAndFlip, random_horizontal_flip
from tradi.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASS_NAMES,
    TensorSplit,
    load_dataset,
)
from tradi.data.files import resolve_data_dir

BenchmarkName = Literal[
    "digits", "mnist", "mnist-notmnist", "cifar10", "camvid-ood", "streethazards", "bdd-anomaly"
]
BENCHMARK_NAMES: tuple[str, ...] = get_args(BenchmarkName)
Task = Literal["classification", "segmentation"]

DIGITS_IN_DISTRIBUTION = (0, 1, 2, 3, 4)
IGNORE_INDEX = 255
CAMVID_PEDESTRIAN = 9
CAMVID_UNLABELLED = 11
CAMVID_KNOWN_CLASSES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10)
CAMVID_OOD_LABEL = len(CAMVID_KNOWN_CLASSES)
# StreetHazards label-file values (see the module docstring): 1-13 known, 14 the anomaly.
STREETHAZARDS_KNOWN = tuple(range(1, 14))
STREETHAZARDS_ANOMALY = (14,)
# BDD100K train ids: train (16) and motorcycle (17) are the anomalies.
BDD_ANOMALY_KNOWN = (*range(16), 18)
BDD_ANOMALIES = (16, 17)


@dataclass(frozen=True)
class Benchmark:
    """Everything an experiment needs; see the module docstring for each protocol."""

    name: str
    task: Task
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    ood_test: TensorSplit | None
    ood_val: TensorSplit | None
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    augment: Augment | None = None
    ignore_index: int | None = None
    ood_label: int | None = None
    class_weights: Tensor | None = None
    far_ood_test: TensorSplit | None = None


def split_train_val(
    data: TensorSplit | tuple[Tensor, Tensor], val_fraction: float, seed: int
) -> tuple[TensorSplit, TensorSplit]:
    """Carve a seeded random validation part of ``round(val_fraction * N)`` samples out of a
    training set; both parts keep the original order of their samples."""
    if not isinstance(data, TensorSplit):
        data = TensorSplit(*data)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = round(val_fraction * len(data))
    if not 0 < n_val < len(data):
        raise ValueError(f"val_fraction {val_fraction} leaves an empty part of {len(data)} samples")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    val_indices, _ = order[:n_val].sort()
    train_indices, _ = order[n_val:].sort()
    return data.subset(train_indices), data.subset(val_indices)


def median_frequency_weights(labels: Tensor, num_classes: int) -> Tensor:
    """SegNet's class weights: median(f) / f_c, with f_c = pixels of class c / labelled pixels
    of the images where c occurs. Pixels outside [0, num_classes) (ignored) are not counted."""
    flat = labels.reshape(labels.shape[0], -1)
    valid = (flat >= 0) & (flat < num_classes)
    counts = torch.stack([(flat == c).sum(dim=1) for c in range(num_classes)], dim=1)
    labelled = valid.sum(dim=1, keepdim=True)
    class_pixels = counts.sum(dim=0).double()
    pixels_where_present = (labelled * (counts > 0)).sum(dim=0).double()
    if (class_pixels == 0).any():
        absent = torch.nonzero(class_pixels == 0).flatten().tolist()
        raise ValueError(f"classes {absent} never occur, so they have no frequency")
    frequency = class_pixels / pixels_where_present
    return (frequency.quantile(0.5) / frequency).float()  # the mean of the middle two, as NumPy


def _remap(labels: Tensor, mapping: Mapping[int, int]) -> Tensor:
    table = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
    for source, target in mapping.items():
        table[source] = target
    return table[labels]


def _classes(split: TensorSplit, keep: tuple[int, ...]) -> TensorSplit:
    return split.subset(torch.isin(split.y, torch.tensor(keep)).nonzero().flatten())


def load_benchmark(
    name: BenchmarkName | str,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    download: bool = False,
    checksums: Mapping[str, str | None] | None = None,
    image_size: tuple[int, int] | None = None,
) -> Benchmark:
    """Load a benchmark by name: ``digits`` needs no ``data_dir``; the others read
    ``data_dir`` or ``$TRADI_DATA_DIR`` (see `load_dataset` for ``download`` and
    ``checksums``). ``val_fraction`` and ``seed`` set the validation split carved from train.
    ``image_size`` (H, W) resizes the anomaly benchmarks' images while reading them; the other
    benchmarks refuse it (ValueError).

    ``name`` may also be the import path of your own function (``mypkg.data.make_benchmark``),
    called as ``function(data_dir=..., val_fraction=..., seed=...)`` and returning a
    `Benchmark`. Raises ValueError for an unknown name or a path that cannot be imported."""
    if name not in BENCHMARK_NAMES and "." in name:  # your own: "package.module.function"
        return _user_benchmark(name, data_dir, val_fraction, seed)
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARK_NAMES)}")
    anomaly = {"streethazards": _streethazards, "bdd-anomaly": _bdd_anomaly}
    if image_size is not None and name not in anomaly:
        raise ValueError(
            f"{name} is read at its stored size; image_size applies to {', '.join(anomaly)}"
        )
    if name == "digits":
        return _digits(val_fraction, seed)
    root = resolve_data_dir(data_dir)
    load = partial(load_dataset, data_dir=root, download=download, checksums=checksums)
    if name in anomaly:
        return anomaly[name](partial(load, image_size=image_size))
    if name == "camvid-ood":
        return _camvid_ood(load)
    return _classification(name, root, load, val_fraction, seed, download)


def _classification(
    name: str,
    root: Path,
    load: partial[TensorSplit],
    val_fraction: float,
    seed: int,
    download: bool,
) -> Benchmark:
    """mnist, mnist-notmnist or cifar10 from their datasets under ``root``."""
    dataset = "cifar10" if name == "cifar10" else "mnist"
    train, val = split_train_val(load(dataset, "train"), val_fraction, seed)
    test = load(dataset, "test")
    ood_test = ood_val = None
    if name == "mnist-notmnist":
        ood_test = load("notmnist", "test")
        ood_val = _fashion_mnist_if_present(root, load, download)
    augment = None
    if name == "cifar10":
        black = tuple(-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True))
        augment = CropAndFlip(padding=4, fill=black)
    return Benchmark(
        name=name,
        task="classification",
        train=train,
        val=val,
        test=test,
        ood_test=ood_test,
        ood_val=ood_val,
        num_classes=10,
        input_shape=_image_shape(test.x),
        class_names=CLASS_NAMES[dataset],
        augment=augment,
    )


def _image_shape(x: Tensor) -> tuple[int, int, int]:
    channels, height, width = x.shape[1:]
    return channels, height, width


def _fashion_mnist_if_present(
    root: Path, load: partial[TensorSplit], download: bool
) -> TensorSplit | None:
    if not (root / "fashion_mnist").is_dir() and not download:
        warnings.warn(
            f"{root / 'fashion_mnist'} is absent: mnist-notmnist has no ood_val set",
            stacklevel=4,  # the caller of load_benchmark (via _classification)
        )
        return None
    return load("fashion_mnist", "test")


def _digits(val_fraction: float, seed: int) -> Benchmark:
    out_of_distribution = tuple(d for d in range(10) if d not in DIGITS_IN_DISTRIBUTION)
    full_train = load_dataset("digits", "train")
    full_test = load_dataset("digits", "test")
    train, val = split_train_val(_classes(full_train, DIGITS_IN_DISTRIBUTION), val_fraction, seed)
    test = _classes(full_test, DIGITS_IN_DISTRIBUTION)
    return Benchmark(
        name="digits",
        task="classification",
        train=train,
        val=val,
        test=test,
        ood_test=_classes(full_test, out_of_distribution),
        ood_val=None,
        num_classes=len(DIGITS_IN_DISTRIBUTION),
        input_shape=(1, 8, 8),
        class_names=tuple(str(d) for d in DIGITS_IN_DISTRIBUTION),
        far_ood_test=TensorSplit(test.x.min() + test.x.max() - test.x, test.y),
    )


def _camvid_ood(load: partial[TensorSplit]) -> Benchmark:
    splits = {split: load("camvid", split) for split in ("train", "val", "test")}
    names = CLASS_NAMES["camvid"]
    return _unseen_class_benchmark(
        "camvid-ood",
        splits,
        CAMVID_KNOWN_CLASSES,
        (CAMVID_PEDESTRIAN,),
        tuple(names[c] for c in CAMVID_KNOWN_CLASSES),
        class_weighted=True,
    )


def _unseen_class_benchmark(
    name: str,
    splits: Mapping[str, TensorSplit],
    known: tuple[int, ...],
    anomalies: tuple[int, ...],
    class_names: tuple[str, ...],
    *,
    class_weighted: bool = False,
) -> Benchmark:
    """Known label values -> classes 0..K-1 in order, anomaly values -> ``ood_label`` K in the
    test split only (ignored in train and val), every other value -> ``ignore_index``. With
    ``class_weighted``, SegNet's median-frequency weights of the known classes of train."""
    classes = {value: target for target, value in enumerate(known)}
    ood = dict.fromkeys(anomalies, len(known))
    train, val = (TensorSplit(splits[s].x, _remap(splits[s].y, classes)) for s in ("train", "val"))
    test = TensorSplit(splits["test"].x, _remap(splits["test"].y, {**classes, **ood}))
    return Benchmark(
        name=name,
        task="segmentation",
        train=train,
        val=val,
        test=test,
        ood_test=None,
        ood_val=None,
        num_classes=len(known),
        input_shape=_image_shape(test.x),
        class_names=class_names,
        augment=random_horizontal_flip,
        ignore_index=IGNORE_INDEX,
        ood_label=len(known),
        class_weights=median_frequency_weights(train.y, len(known)) if class_weighted else None,
    )


def _streethazards(load: partial[TensorSplit]) -> Benchmark:
    splits = {split: load("streethazards", split) for split in ("train", "val", "test")}
    names = CLASS_NAMES["streethazards"]  # file value v is names[v - 1]
    return _unseen_class_benchmark(
        "streethazards",
        splits,
        STREETHAZARDS_KNOWN,
        STREETHAZARDS_ANOMALY,
        tuple(names[v - 1] for v in STREETHAZARDS_KNOWN),
    )


def _bdd_anomaly(load: partial[TensorSplit]) -> Benchmark:
    """BDD's train and val images without an anomaly pixel train and validate; the anomalous
    ones of both (train first) are the test set."""
    anomalies = torch.tensor(BDD_ANOMALIES)
    normal: dict[str, TensorSplit] = {}
    anomalous: list[TensorSplit] = []
    for split in ("train", "val"):
        data = load("bdd100k", split)
        has_anomaly = torch.isin(data.y, anomalies).flatten(1).any(dim=1)
        normal[split] = data.subset(torch.nonzero(~has_anomaly).flatten())
        anomalous.append(data.subset(torch.nonzero(has_anomaly).flatten()))
    test = TensorSplit(torch.cat([s.x for s in anomalous]), torch.cat([s.y for s in anomalous]))
    if len(test) == 0:
        raise ValueError("bdd-anomaly: no image holds a motorcycle or train pixel: no test set")
    names = CLASS_NAMES["bdd100k"]
    return _unseen_class_benchmark(
        "bdd-anomaly",
        {**normal, "test": test},
        BDD_ANOMALY_KNOWN,
        BDD_ANOMALIES,
        tuple(names[v] for v in BDD_ANOMALY_KNOWN),
    )


def import_benchmark_factory(path: str) -> Callable[..., Benchmark]:
    """The function at import path ``package.module.function`` that builds a `Benchmark`;
    raises ValueError saying what failed."""
    found = import_object(path, "benchmark")
    if not callable(found):
        raise ValueError(f"benchmark {path!r} is not a function")
    return found


def _user_benchmark(
    path: str, data_dir: str | os.PathLike[str] | None, val_fraction: float, seed: int
) -> Benchmark:
    benchmark = import_benchmark_factory(path)(
        data_dir=data_dir, val_fraction=val_fraction, seed=seed
    )
    if not isinstance(benchmark, Benchmark):
        raise TypeError(f"{path} returned {type(benchmark).__name__}, not a tradi.data.Benchmark")
    return benchmark
