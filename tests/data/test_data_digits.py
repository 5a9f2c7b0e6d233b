"""scikit-learn digits: scaling, shape and a stable, disjoint, stratified split."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from sklearn.datasets import load_digits

from advlab.data import load_dataset
from advlab.data.digits import digits_split_indices

# Pinned: changing the split silently would change every number computed on it.
TEST_INDICES_SHA256 = "78d5b4207a8505a6c6bff1213a0f93b2a335fdb6d746c6ce94f5d6982637c667"
TEST_CLASS_COUNTS = [44, 46, 44, 46, 45, 46, 45, 45, 44, 45]  # round(0.25 * n_c), half to even


def test_split_is_disjoint_complete_stratified_and_pinned() -> None:
    labels = load_digits().target
    train, test = digits_split_indices(labels)
    assert len(train) == 1347 and len(test) == 450
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.union1d(train, test), np.arange(1797))
    assert np.bincount(labels[test]).tolist() == TEST_CLASS_COUNTS
    assert hashlib.sha256(test.astype("<i8").tobytes()).hexdigest() == TEST_INDICES_SHA256


def test_datasets_match_the_split_and_scale() -> None:
    bunch = load_digits()
    train_idx, test_idx = digits_split_indices(bunch.target)
    for split, index in (("train", train_idx), ("test", test_idx)):
        ds = load_dataset("digits", split=split)
        assert ds.x.shape == (len(index), 1, 8, 8)
        expected = torch.tensor(bunch.images[index] / 16.0, dtype=torch.float32).unsqueeze(1)
        assert torch.equal(ds.x, expected)
        assert torch.equal(ds.y, torch.from_numpy(bunch.target[index]).long())
        assert float(ds.x.max()) == 1.0 and float(ds.x.min()) == 0.0
        assert ds.class_names == tuple("0123456789")
        assert "seed 0" in ds.source


def test_split_is_stable_across_calls_and_independent_of_global_rng() -> None:
    first = load_dataset("digits", split="test")
    np.random.seed(123)
    torch.manual_seed(123)
    second = load_dataset("digits", split="test")
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
