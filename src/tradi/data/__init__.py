"""Datasets from a user-set data directory, checksummed; the embedded ``digits`` default;
seeded validation splits; benchmarks pairing in-distribution and OOD sets.

The data directory (``data_dir=``, CLI ``--data-dir``, or ``$TRADI_DATA_DIR``) holds::

    mnist/          {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    fashion_mnist/  the same four IDX files
    notmnist/       t10k-{images-idx3,labels-idx1}-ubyte[.gz]  or  notmnist_small.npz
    cifar10/        cifar-10-batches-py/{data_batch_1..5,test_batch}  or  cifar10.npz
    camvid/         CamVid/{train,val,test}{,annot}/*.png + CamVid/{train,val,test}.txt
                    or  camvid.npz
    streethazards/  train/{images,annotations}/{training,validation}/<town>/*.png and
                    test/{images,annotations}/test/<town>/*.png (the two published tars)
    bdd100k/        seg/images/{train,val}/*.jpg + seg/labels/{train,val}/*_train_id.png

Every file is checked against its known checksum before use (`KNOWN_CHECKSUMS`); a missing
file raises `DatasetNotFoundError` (a FileNotFoundError) naming the path it belongs at, a
corrupt one `ChecksumMismatchError` (a ValueError) with both digests.

>>> bench = load_benchmark("mnist-notmnist", data_dir="../shared/data", val_fraction=0.1, seed=0)
>>> bench.train.x.shape, bench.ood_test.x.shape
(torch.Size([54000, 1, 28, 28]), torch.Size([10000, 1, 28, 28]))
"""

from tradi.data.augment import (
    Augment,
    CropAndFlip,
    random_crop,
    random_horizontal_flip,
)
from tradi.data.benchmarks import (
    BENCHMARK_NAMES,
    CAMVID_KNOWN_CLASSES,
    CAMVID_OOD_LABEL,
    DIGITS_IN_DISTRIBUTION,
    IGNORE_INDEX,
    Benchmark,
    BenchmarkName,
    load_benchmark,
    median_frequency_weights,
    split_train_val,
)
from tradi.data.datasets import (
    CLASS_NAMES,
    DATASET_NAMES,
    NORMALISATION,
    DatasetName,
    TensorSplit,
    denormalise,
    load_dataset,
)
from tradi.data.files import (
    DATA_DIR_ENV,
    KNOWN_CHECKSUMS,
    ChecksumMismatchError,
    DatasetNotFoundError,
    compute_checksum,
    git_tree_id,
    resolve_data_dir,
    verify,
)

__all__ = [
    "BENCHMARK_NAMES",
    "CAMVID_KNOWN_CLASSES",
    "CAMVID_OOD_LABEL",
    "CLASS_NAMES",
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "DIGITS_IN_DISTRIBUTION",
    "IGNORE_INDEX",
    "KNOWN_CHECKSUMS",
    "NORMALISATION",
    "Augment",
    "Benchmark",
    "BenchmarkName",
    "ChecksumMismatchError",
    "CropAndFlip",
    "DatasetName",
    "DatasetNotFoundError",
    "TensorSplit",
    "compute_checksum",
    "denormalise",
    "git_tree_id",
    "load_benchmark",
    "load_dataset",
    "median_frequency_weights",
    "random_crop",
    "random_horizontal_flip",
    "resolve_data_dir",
    "split_train_val",
    "verify",
]
