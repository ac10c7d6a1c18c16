"""The embedded digits protocol and seeded validation splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tradi.data import (
    DIGITS_IN_DISTRIBUTION,
    TensorSplit,
    denormalise,
    load_benchmark,
    load_dataset,
    split_train_val,
)


def as_rows(split: TensorSplit) -> set[bytes]:
    return {row.numpy().tobytes() for row in split.x.reshape(len(split), -1)}


def test_digits_protocol_matches_scikit_learn() -> None:
    digits = load_digits()
    bench = load_benchmark("digits", val_fraction=0.1, seed=0)
    assert (bench.num_classes, bench.input_shape, bench.task) == (5, (1, 8, 8), "classification")
    assert bench.ood_val is None and bench.ood_test is not None

    # Class counts: two thirds of each class (rounded down) for train + val, the rest for test.
    for label in range(10):
        n = int((digits.target == label).sum())
        in_train = int((bench.train.y == label).sum() + (bench.val.y == label).sum())
        in_test = int((bench.test.y == label).sum() + (bench.ood_test.y == label).sum())
        if label in DIGITS_IN_DISTRIBUTION:
            assert (in_train, in_test) == (n * 2 // 3, n - n * 2 // 3)
        else:
            assert (in_train, in_test) == (0, n - n * 2 // 3)
    assert set(bench.ood_test.y.tolist()) == {5, 6, 7, 8, 9}
    assert len(bench.val) == round(0.1 * (len(bench.train) + len(bench.val)))

    # The pixels are sklearn's, scaled from 0..16 to [-1, 1].
    class_members = [np.flatnonzero(digits.target == c) for c in range(10)]
    test_indices = np.sort(np.concatenate([m[2 * len(m) // 3 :] for m in class_members]))
    full_test = load_dataset("digits", "test")
    restored = (denormalise("digits", full_test.x) * 16).round().squeeze(1).numpy()
    np.testing.assert_array_equal(restored, digits.images[test_indices])
    assert full_test.y.tolist() == digits.target[test_indices].tolist()

    splits = [bench.train, bench.val, bench.test]
    assert sum(len(s) for s in splits) == len(set().union(*(as_rows(s) for s in splits)))


def test_digits_split_is_deterministic_and_val_follows_the_seed() -> None:
    first, again = load_benchmark("digits", seed=0), load_benchmark("digits", seed=0)
    other = load_benchmark("digits", seed=1)
    torch.testing.assert_close(first.val.x, again.val.x)
    torch.testing.assert_close(first.test.x, other.test.x)  # test never depends on the seed
    assert not torch.equal(first.val.x, other.val.x)


def test_split_train_val_partitions_the_training_set() -> None:
    x = torch.arange(100, dtype=torch.float32).view(100, 1)
    y = torch.arange(100) % 7
    train, val = split_train_val((x, y), val_fraction=0.2, seed=5)
    assert (len(train), len(val)) == (80, 20)
    indices = torch.cat([train.x, val.x]).flatten().long()
    assert sorted(indices.tolist()) == list(range(100))
    for part in (train, val):
        assert torch.all(part.x[1:] > part.x[:-1])  # original order kept
        torch.testing.assert_close(part.y, y[part.x.flatten().long()])
    again, _ = split_train_val(TensorSplit(x, y), 0.2, seed=5)
    torch.testing.assert_close(again.x, train.x)
    other, _ = split_train_val(TensorSplit(x, y), 0.2, seed=6)
    assert not torch.equal(other.x, train.x)


def test_split_train_val_rejects_degenerate_fractions() -> None:
    data = TensorSplit(torch.zeros(10, 1), torch.zeros(10))
    for fraction in (0.0, 1.0, 0.01):
        with pytest.raises(ValueError, match="val_fraction"):
            split_train_val(data, fraction, seed=0)
    with pytest.raises(ValueError, match="samples"):
        TensorSplit(torch.zeros(3, 1), torch.zeros(4))


def test_unknown_names_are_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of digits"):
        load_benchmark("svhn")
    with pytest.raises(ValueError, match="choose one of digits"):
        load_dataset("svhn", "test")
