"""Signals (N, C, T): the .ts parser, and the sets that ship inside sktime/aeon (never downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import advlab.data.signals as signals
from advlab.data import DatasetNotFoundError, TsFormatError, load_dataset, load_signal, read_ts

HAVE_PACKAGE = any(importlib.util.find_spec(p) is not None for p in signals.PACKAGES)
needs_package = pytest.mark.skipif(not HAVE_PACKAGE, reason="needs advlab[signals] (sktime or aeon)")

TS = """# a comment
@problemName Toy
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true up down
@data
1,2,3:10,20,30:up
3,2,1:30,20,10:down
"""


def test_read_ts_parses_channels_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "toy.ts"
    path.write_text(TS)
    values, labels, header = read_ts(path)
    assert values.shape == (2, 2, 3) and values.dtype == np.float64
    assert values[0].tolist() == [[1, 2, 3], [10, 20, 30]] and values[1, 1].tolist() == [30, 20, 10]
    assert labels == ["up", "down"] and header["classlabel"] == "true up down"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("1,2,3:10,20,30:up\n1,2:10,20:down\n", "differ in shape"),
        ("1,?,3:10,20,30:up\n", r"missing values \('\?'\)"),
        ("1,2,3:10,20:up\n", "different lengths"),
        ("1,x,3:10,20,30:up\n", "not a list of numbers"),
        ("up\n", "values and a class label"),
        ("", "no cases"),
    ],
)
def test_read_ts_errors_name_the_line(tmp_path: Path, data: str, message: str) -> None:
    path = tmp_path / "bad.ts"
    path.write_text(TS.split("@data\n")[0] + "@data\n" + data)
    with pytest.raises(TsFormatError, match=message):
        read_ts(path)


def test_read_ts_refuses_time_stamps_and_files_without_data(tmp_path: Path) -> None:
    path = tmp_path / "t.ts"
    path.write_text(TS.replace("@timeStamps false", "@timeStamps true"))
    with pytest.raises(TsFormatError, match="time stamps"):
        read_ts(path)
    path.write_text("@problemName x\n")
    with pytest.raises(TsFormatError, match="no '@data' line"):
        read_ts(path)


@needs_package
def test_basic_motions_from_the_installed_package() -> None:
    train, test = load_dataset("basic-motions", split="train"), load_dataset("basic_motions", split="test")
    assert train.kind == "signal" and train.input_shape == (6, 100) and len(train) == len(test) == 40
    assert train.class_names == ("Standing", "Running", "Walking", "Badminton")
    assert torch.equal(torch.bincount(train.y), torch.full((4,), 10))
    assert train.feature_names == ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
    # every channel spans [0, 1] over the TRAIN file; the TEST file is scaled with the same ranges
    per_channel = train.x.transpose(0, 1).reshape(6, -1)
    assert torch.equal(per_channel.min(1).values, torch.zeros(6))
    assert torch.equal(per_channel.max(1).values, torch.ones(6))
    assert test.scaling == train.scaling and float(test.x.min()) >= 0 and float(test.x.max()) <= 1
    # back to the file's values
    raw, labels, _ = read_ts(signals._bundled_file(signals.SIGNALS["basic-motions"], "train"))
    assert np.allclose(train.scaling.to_original(train.x).numpy(), raw, atol=1e-5 * np.abs(raw).max())
    assert [train.class_names[k] for k in train.y.tolist()] == labels
    assert "bundled with" in train.source


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signals, "PACKAGES", ("advlab_no_such_package_a", "advlab_no_such_package_b"))
    with pytest.raises(DatasetNotFoundError, match=r"pip install 'advlab\[signals\]'.*not installed"):
        load_signal("basic-motions")
    with pytest.raises(ValueError, match="unknown signal set 'nope'"):
        load_signal("nope")
