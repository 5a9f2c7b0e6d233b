"""Datasets and loaders: tensors in ``[0, 1]`` with labels and provenance; no attack knowledge.

>>> from advlab.data import load_dataset
>>> test = load_dataset("fashion-mnist", split="test")      # doctest: +SKIP
>>> for x, y in test.subset(1000).batches(256):              # doctest: +SKIP
...     ...                                                   # x: (B, 1, 28, 28), y: (B,)
"""

from __future__ import annotations

from .dataset import Dataset
from .errors import ChecksumError, DatasetNotFoundError, DownloadError
from .files import load_image_folder, load_npz
from .idx import IdxFormatError, read_idx, write_idx
from .registry import available_datasets, load_dataset
from .regression import RegressionData, load_diabetes_regression

__all__ = [
    "ChecksumError",
    "Dataset",
    "DatasetNotFoundError",
    "DownloadError",
    "IdxFormatError",
    "RegressionData",
    "available_datasets",
    "load_dataset",
    "load_diabetes_regression",
    "load_image_folder",
    "load_npz",
    "read_idx",
    "write_idx",
]
