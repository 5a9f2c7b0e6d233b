"""The public surface of advlab.data."""

from __future__ import annotations

import pytest

import advlab.data as data
from advlab.data import available_datasets, load_dataset


def test_public_api_is_pinned() -> None:
    assert sorted(data.__all__) == [
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
    assert all(hasattr(data, name) for name in data.__all__)
    assert issubclass(data.DatasetNotFoundError, FileNotFoundError)


def test_available_datasets() -> None:
    assert available_datasets() == ["basic-motions", "breast-cancer", "digits", "fashion-mnist", "gunpoint",
                                    "italy-power-demand", "mnist", "wine"]


@pytest.mark.parametrize("name", ["digits", "fashion-mnist", "mnist", "breast-cancer", "wine", "basic-motions",
                                  "npz:x.npz", "folder:x"])
def test_bad_split_is_rejected_for_every_source(name: str) -> None:
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_dataset(name, split="val")


def test_unknown_name_lists_the_choices() -> None:
    expected = (r"unknown dataset 'cifar10'; available: basic-motions, breast-cancer, digits, fashion-mnist, "
                r"gunpoint, italy-power-demand, mnist, wine, 'npz:PATH', 'csv:PATH'")
    with pytest.raises(ValueError, match=expected):
        load_dataset("cifar10")


def test_existing_path_without_prefix_gets_a_hint(tmp_path) -> None:
    with pytest.raises(ValueError, match="say 'npz:.*', 'csv:.*' or 'folder:"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("name", ["npz:", "csv:", "folder:"])
def test_empty_prefix_path(name: str) -> None:
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset(name)


def test_names_are_case_and_underscore_insensitive() -> None:
    assert load_dataset("DIGITS").name == "digits"
    with pytest.raises(data.DatasetNotFoundError, match="MNIST"):
        load_dataset("MNIST")  # resolved to the mnist spec (and not found in the isolated env)
