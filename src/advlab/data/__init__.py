"""Datasets and loaders: tensors in ``[0, 1]`` with labels and provenance; no attack knowledge.

Images ``(N, C, H, W)``, tables ``(N, D)`` (breast-cancer, wine, CSV files) and signals
``(N, C, T)`` (the sensor sets sktime ships, ``advlab[signals]``); tables and signals carry their
feature names and a :class:`FeatureScaling` back to original units.

>>> from advlab.data import load_dataset
>>> test = load_dataset("fashion-mnist", split="test")      # doctest: +SKIP
>>> for x, y in test.subset(1000).batches(256):              # doctest: +SKIP
...     ...                                                   # x: (B, 1, 28, 28), y: (B,)
"""

from __future__ import annotations

from .dataset import Dataset, FeatureScaling
from .errors import ChecksumError, DatasetNotFoundError, DownloadError
from .files import load_image_folder, load_npz
from .idx import IdxFormatError, read_idx, write_idx
from .registry import available_datasets, load_dataset
from .regression import RegressionData, load_diabetes_regression
from .signals import TsFormatError, load_signal, read_ts
from .tabular import load_csv, load_table

__all__ = [
    "ChecksumError",
    "Dataset",
    "DatasetNotFoundError",
    "DownloadError",
    "FeatureScaling",
    "IdxFormatError",
    "RegressionData",
    "TsFormatError",
    "available_datasets",
    "load_csv",
    "load_dataset",
    "load_diabetes_regression",
    "load_image_folder",
    "load_npz",
    "load_signal",
    "load_table",
    "read_idx",
    "read_ts",
    "write_idx",
]
