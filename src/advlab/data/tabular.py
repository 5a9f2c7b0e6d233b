"""Tabular data ``(N, D)``: scikit-learn's breast-cancer and wine tables, and CSV files.

Every table is min-max scaled to ``[0, 1]`` per feature with the ranges fitted on the training
split only (test values outside them are clipped), so that an attack's ε means a fraction of each
feature's training range and the box ``[0, 1]^D`` is the data's box. The ranges travel with the
dataset (:attr:`Dataset.scaling`) to map adversarial rows back to original units, and so do the
column names (:attr:`Dataset.feature_names`).

The split is stratified and seeded (:func:`~advlab.data.digits.digits_split_indices`: a private
``RandomState``, never the global RNG), the same on every machine.

Example:
    >>> ds = load_table("breast-cancer", split="train")
    >>> ds.input_shape, ds.class_names, ds.feature_names[0]
    ((30,), ('malignant', 'benign'), 'mean radius')
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, FeatureScaling
from .digits import digits_split_indices
from .errors import DatasetNotFoundError

__all__ = ["TABLES", "TABLE_SEED", "TABLE_TEST_FRACTION", "load_csv", "load_table", "scaled_split"]

logger = logging.getLogger(__name__)

TABLE_TEST_FRACTION = 0.25
TABLE_SEED = 0

#: built-in tables: name -> the ``sklearn.datasets`` loader that ships them
TABLES = {"breast-cancer": "load_breast_cancer", "wine": "load_wine"}

#: the column names :func:`load_csv` takes for the label when ``label`` is not given
LABEL_COLUMNS = ("label", "target", "class", "y")


def scaled_split(
    raw: np.ndarray,
    labels: np.ndarray,
    *,
    split: str | None,
    test_fraction: float = TABLE_TEST_FRACTION,
    seed: int = TABLE_SEED,
    what: str = "rows",
) -> tuple[torch.Tensor, torch.Tensor, FeatureScaling, str]:
    """Split ``raw`` ``(N, F, *)`` stratified by ``labels`` and min-max scale it per index of axis 1.

    The ranges are fitted on the training rows (on all rows when ``split`` is ``None``) and the
    returned rows are clipped to ``[0, 1]``.

    Returns:
        ``(x, y, scaling, description)``: the chosen split's ``float32`` values and ``int64``
        labels, the :class:`FeatureScaling`, and a sentence for the dataset's ``source``.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None (all rows), got {split!r}")
    raw_t = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float64))
    if split is None:
        train = index = np.arange(labels.shape[0])
        described = f"all {labels.shape[0]} {what}, min-max scaled on all of them"
    else:
        train, test = digits_split_indices(labels, test_fraction=test_fraction, seed=seed)
        index = train if split == "train" else test
        described = (f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split, seed {seed}: {split} "
                     f"({index.size} {what}); min-max scaled on the train split ({train.size} {what})")
    scaling = FeatureScaling.fit(raw_t[torch.from_numpy(train)],
                                 fitted_on=f"{'train split' if split else 'all'} ({train.size} {what})")
    part = raw_t[torch.from_numpy(index)]
    unclipped = _unclipped(scaling, part)
    x = unclipped.clamp(0.0, 1.0).to(torch.float32)
    clipped = int(((unclipped < 0) | (unclipped > 1)).sum())
    if clipped:
        logger.info("%d values of the %s split lie outside the training range and were clipped to [0, 1]",
                    clipped, split)
        described += f"; {clipped} values outside the training range clipped"
    return x, torch.from_numpy(labels[index].astype(np.int64)), scaling, described


def _unclipped(scaling: FeatureScaling, raw: torch.Tensor) -> torch.Tensor:
    low, high = scaling._view(raw)
    span = high - low
    return torch.where(span > 0, (raw - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(span))


def load_table(
    name: str, *, split: str = "test", test_fraction: float = TABLE_TEST_FRACTION, seed: int = TABLE_SEED
) -> Dataset:
    """scikit-learn's breast-cancer (569 x 30, 2 classes) or wine (178 x 13, 3 classes) table.

    Args:
        name: ``"breast-cancer"`` or ``"wine"``.
        split: ``"train"`` or ``"test"`` (stratified, ``test_fraction`` of each class to test).
        test_fraction, seed: the split.

    Returns:
        A :class:`Dataset` of shape ``(N, D)`` in ``[0, 1]``, with ``feature_names`` and the
        per-feature original ranges in ``scaling`` (fitted on the train split).
    """
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; available: {', '.join(sorted(TABLES))}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    import sklearn
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, TABLES[name])()
    raw = np.asarray(bunch.data, dtype=np.float64)  # (N, D)
    labels = np.asarray(bunch.target, dtype=np.int64)  # (N,)
    x, y, scaling, described = scaled_split(raw, labels, split=split, test_fraction=test_fraction, seed=seed)
    return Dataset(
        name=name,
        x=x,
        y=y,
        class_names=tuple(str(c) for c in bunch.target_names),
        source=f"sklearn.datasets.{TABLES[name]} (scikit-learn {sklearn.__version__}); {described}",
        feature_names=tuple(str(f) for f in bunch.feature_names),
        scaling=scaling,
    )


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def load_csv(
    path: str | os.PathLike[str],
    *,
    label: str | int | None = None,
    split: str | None = None,
    test_fraction: float = TABLE_TEST_FRACTION,
    seed: int = TABLE_SEED,
    delimiter: str = ",",
    name: str | None = None,
) -> Dataset:
    """Read a CSV table with a header row as a dataset ``(N, D)`` in ``[0, 1]``.

    Every column but the label is a numeric feature; the features are min-max scaled per column,
    fitted on the training rows (all rows when ``split`` is ``None``). Labels may be integers or
    strings: their sorted distinct values become the classes (label ``k`` is the ``k``-th), except
    that integer labels ``0..K-1`` keep their numbers.

    Args:
        path: the ``.csv`` file.
        label: the label column, by name or index (negative counts from the end); by default the
            first column named ``label``, ``target``, ``class`` or ``y`` (any case), else the last.
        split: ``None`` for every row, or ``"train"`` / ``"test"`` for a stratified seeded split.
        test_fraction, seed: the split.
        delimiter: the field separator.
        name: dataset name; defaults to the file's stem.

    Raises:
        DatasetNotFoundError: no such file.
        ValueError: an empty file, a ragged row, a missing value, or a non-numeric feature column
            (the message names it and suggests one-hot encoding or dropping it).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"csv file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [row for row in csv.reader(fh, delimiter=delimiter) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row, found {len(rows)} row(s)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    width = len(header)
    if width < 2:
        raise ValueError(f"{path}: found {width} column; a table needs a label column and at least one feature "
                         f"(is the delimiter {delimiter!r} right?)")
    for i, row in enumerate(body, start=2):
        if len(row) != width:
            raise ValueError(f"{path}: line {i} has {len(row)} fields but the header has {width}")
    label_index = _label_index(path, header, label)
    columns = [[row[j].strip() for row in body] for j in range(width)]
    feature_index = [j for j in range(width) if j != label_index]
    raw = np.empty((len(body), len(feature_index)), dtype=np.float64)
    for k, j in enumerate(feature_index):
        values = [_number(cell) for cell in columns[j]]
        missing = [i for i, (cell, v) in enumerate(zip(columns[j], values), start=2)
                   if cell == "" or (v is not None and not math.isfinite(v))]
        if missing:
            raise ValueError(f"{path}: column {header[j]!r} has missing or non-finite values (line {missing[0]}"
                             f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}); impute or drop them")
        text = [cell for cell, v in zip(columns[j], values) if v is None]
        if text:
            raise ValueError(
                f"{path}: feature column {header[j]!r} is not numeric (e.g. {text[0]!r}); encode it as numbers "
                f"(one-hot: a 0/1 column per category) or drop it, or pass label={header[j]!r} if it is the label"
            )
        raw[:, k] = values
    labels, class_names = _encode_labels(columns[label_index])
    x, y, scaling, described = scaled_split(raw, labels, split=split, test_fraction=test_fraction, seed=seed)
    return Dataset(
        name=name or path.stem,
        x=x,
        y=y,
        class_names=class_names,
        source=f"csv:{path.resolve()} (label column {header[label_index]!r}); {described}",
        feature_names=tuple(header[j] for j in feature_index),
        scaling=scaling,
    )


def _label_index(path: Path, header: Sequence[str], label: str | int | None) -> int:
    width = len(header)
    if label is None:
        lowered = [h.lower() for h in header]
        return next((lowered.index(c) for c in LABEL_COLUMNS if c in lowered), width - 1)
    if isinstance(label, bool):
        raise TypeError("label must be a column name or index, not a bool")
    if isinstance(label, int):
        if not -width <= label < width:
            raise ValueError(f"{path}: label column index {label} is out of range for {width} columns")
        return label % width
    if label not in header:
        raise ValueError(f"{path}: no column named {label!r}; the columns are {list(header)}")
    return list(header).index(label)


def _encode_labels(cells: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    if any(cell == "" for cell in cells):
        raise ValueError("the label column has empty cells; every row needs a label")
    numbers = [_number(cell) for cell in cells]
    if all(v is not None and float(v).is_integer() for v in numbers):
        ints = np.asarray(numbers, dtype=np.int64)
        distinct = np.unique(ints)
        if np.array_equal(distinct, np.arange(distinct.size)):  # class indices already: keep them
            return ints, tuple(str(k) for k in range(distinct.size))
        return np.searchsorted(distinct, ints).astype(np.int64), tuple(str(int(v)) for v in distinct)
    distinct_s = sorted(set(cells))
    lookup = {c: k for k, c in enumerate(distinct_s)}
    return np.asarray([lookup[c] for c in cells], dtype=np.int64), tuple(distinct_s)
