"""``load_dataset``: one entry point for every dataset advlab knows or can read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .dataset import Dataset
from .digits import load_digits_dataset
from .files import load_image_folder, load_npz
from .mnist import IDX_DATASETS, SPLITS, load_idx_dataset
from .signals import SIGNALS, load_signal
from .tabular import TABLES, load_csv, load_table

__all__ = ["available_datasets", "load_dataset"]

logger = logging.getLogger(__name__)

_BUILTIN_OTHER = ("digits",)


def available_datasets() -> list[str]:
    """Names of the built-in datasets, sorted.

    :func:`load_dataset` also reads ``"npz:PATH"``, ``"csv:PATH"`` and ``"folder:PATH"``. The signal
    sets are listed whether or not the package that ships them (``advlab[signals]``) is installed.
    """
    return sorted([*IDX_DATASETS, *_BUILTIN_OTHER, *TABLES, *SIGNALS])


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def load_dataset(
    name: str | os.PathLike[str],
    *,
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load a dataset by name.

    Args:
        name: images ``"fashion-mnist"``, ``"mnist"``, ``"digits"``; tables ``"breast-cancer"``,
            ``"wine"`` (:func:`~advlab.data.tabular.load_table`); signals ``"basic-motions"``,
            ``"gunpoint"``, ``"italy-power-demand"`` (:func:`~advlab.data.signals.load_signal`,
            from the sktime/aeon package) (case-insensitive, ``_`` may replace ``-``);
            ``"npz:PATH"`` for a NumPy archive (see :func:`load_npz`); ``"csv:PATH"`` for a table
            with a header whose label column is named label/target/class/y or comes last (see
            :func:`load_csv`, every row); ``"folder:PATH"`` for ``PATH/<class>/<image>`` (see
            :func:`load_image_folder`).
            A :class:`~pathlib.Path` to a ``.npz`` file or a directory also works.
        split: ``"train"`` or ``"test"``. An npz archive with ``x_train``/``x_test`` keys
            and a folder with ``train/`` and ``test/`` sub-folders honour it; a source
            holding a single split is returned whole.
        root: directory holding the MNIST-style files (searched first).
        download: fetch MNIST-style files into the cache when they are nowhere on disk.
        cache_dir: the download cache; default ``$ADVLAB_CACHE``, ``$XDG_CACHE_HOME/advlab``
            or ``~/.cache/advlab``.

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: the files are not on disk, or the package shipping them is not
            installed; the message says where it looked and how to fix it.

    Example:
        >>> ds = load_dataset("digits", split="train")
        >>> ds.input_shape, ds.num_classes
        ((1, 8, 8), 10)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(name, os.PathLike):
        path = Path(name)
        return _load_folder(path, split) if path.is_dir() else load_npz(path, split=split)
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string or a path, got {type(name).__name__}")

    prefix, sep, rest = name.partition(":")
    if sep and prefix.lower() == "npz":
        if not rest:
            raise ValueError("'npz:' needs a path, e.g. 'npz:data/my_set.npz'")
        return load_npz(rest, split=split)
    if sep and prefix.lower() == "csv":
        if not rest:
            raise ValueError("'csv:' needs a path, e.g. 'csv:data/my_table.csv'")
        return load_csv(rest, split=split)  # a seeded stratified split: train and test never share rows
    if sep and prefix.lower() == "folder":
        if not rest:
            raise ValueError("'folder:' needs a path, e.g. 'folder:data/my_images'")
        return _load_folder(Path(rest), split)

    key = _canonical(name)
    if key in IDX_DATASETS:
        return load_idx_dataset(IDX_DATASETS[key], split=split, root=root, download=download, cache_dir=cache_dir)
    if key == "digits":
        return load_digits_dataset(split=split)
    if key in TABLES:
        return load_table(key, split=split)
    if key in SIGNALS:
        return load_signal(key, split=split)
    hint = ""
    if name.endswith((".npz", ".csv")) or Path(name).expanduser().exists():
        hint = f"; to read a file or folder say 'npz:{name}', 'csv:{name}' or 'folder:{name}'"
    raise ValueError(
        f"unknown dataset {name!r}; available: {', '.join(available_datasets())}, "
        f"'npz:PATH', 'csv:PATH', 'folder:PATH'{hint}"
    )


def _load_folder(path: Path, split: str) -> Dataset:
    """A folder split into ``train/`` and ``test/`` gives one of them; any other is loaded whole."""
    path = path.expanduser()
    if path.is_dir():
        subdirs = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if subdirs == set(SPLITS):
            return load_image_folder(path / split, name=path.name)
    return load_image_folder(path)
