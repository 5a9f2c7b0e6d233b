"""scikit-learn's 8x8 handwritten digits (1797 images, shipped inside scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset

__all__ = ["DIGITS_SEED", "DIGITS_TEST_FRACTION", "digits_split_indices", "load_digits_dataset"]

DIGITS_TEST_FRACTION = 0.25
DIGITS_SEED = 0


def digits_split_indices(
    labels: np.ndarray, *, test_fraction: float = DIGITS_TEST_FRACTION, seed: int = DIGITS_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic stratified split: ``round(test_fraction * n_c)`` of each class go to test.

    Uses a private ``numpy.random.RandomState`` (whose stream NumPy keeps stable across
    versions), never the global RNG, so the split is the same on every machine.

    Returns:
        Sorted ``(train_indices, test_indices)``, disjoint, together covering every index.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    test_parts = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_test = int(round(test_fraction * members.size))
        test_parts.append(rng.permutation(members)[:n_test])
    test = np.sort(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(labels.size), test)  # sorted
    return train, test


def load_digits_dataset(*, split: str = "test") -> Dataset:
    """Load scikit-learn's digits as a :class:`Dataset` of shape ``(N, 1, 8, 8)``.

    Pixel values 0..16 are divided by 16. The split is stratified 75/25 with a fixed seed
    (:func:`digits_split_indices`): 1347 train and 450 test images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)  # (N, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)  # (N,)
    train, test = digits_split_indices(labels)
    index = train if split == "train" else test
    return Dataset(
        name="digits",
        x=torch.from_numpy(np.ascontiguousarray(images[index])).unsqueeze(1),
        y=torch.from_numpy(labels[index]),
        class_names=tuple(str(d) for d in range(10)),
        source=(
            f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}); "
            f"stratified {1 - DIGITS_TEST_FRACTION:.0%}/{DIGITS_TEST_FRACTION:.0%} split, seed {DIGITS_SEED}"
        ),
    )
