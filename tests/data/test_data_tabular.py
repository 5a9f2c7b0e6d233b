"""Tables (N, D): scikit-learn's breast-cancer and wine, and CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine

from advlab.data import DatasetNotFoundError, FeatureScaling, load_csv, load_dataset, load_table


@pytest.mark.parametrize(("name", "loader", "n_features", "n_classes"),
                         [("breast-cancer", load_breast_cancer, 30, 2), ("wine", load_wine, 13, 3)])
def test_sklearn_tables_are_scaled_on_train_and_map_back(name, loader, n_features, n_classes) -> None:
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    bunch = loader()
    assert train.kind == "table" and train.input_shape == (n_features,) and train.num_classes == n_classes
    assert train.feature_names == tuple(bunch.feature_names) and train.class_names == tuple(bunch.target_names)
    assert len(train) + len(test) == len(bunch.target)
    # stratified: each class's test share is round(25%)
    for k in range(n_classes):
        n_k = int((bunch.target == k).sum())
        assert int((test.y == k).sum()) == round(0.25 * n_k)
    # the ranges are the train split's: its columns span exactly [0, 1]
    assert torch.equal(train.x.min(0).values, torch.zeros(n_features))
    assert torch.equal(train.x.max(0).values, torch.ones(n_features))
    assert test.scaling == train.scaling and "train split" in train.scaling.fitted_on
    # mapping back gives the original rows (float32 rounding apart): the train rows are bunch rows
    raw = torch.from_numpy(bunch.data)
    back = train.scaling.to_original(train.x)  # (N, D) float64
    nearest = torch.cdist(back, raw).min(dim=1).values
    assert float(nearest.max()) < 1e-3 * float(raw.abs().max())
    # the same split on every call (a private RNG), and the global RNG untouched
    state = torch.random.get_rng_state()
    assert torch.equal(load_table(name, split="test").x, test.x)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_test_values_outside_the_train_range_are_clipped_and_counted() -> None:
    test = load_table("breast-cancer", split="test")
    assert float(test.x.min()) >= 0.0 and float(test.x.max()) <= 1.0
    assert "outside the training range clipped" in test.source


def test_feature_scaling_round_trip_and_constant_feature() -> None:
    raw = torch.tensor([[1.0, 5.0, 7.0], [3.0, 5.0, 9.0], [2.0, 5.0, 8.0]], dtype=torch.float64)
    s = FeatureScaling.fit(raw, fitted_on="three rows")
    assert s.low == (1.0, 5.0, 7.0) and s.high == (3.0, 5.0, 9.0)
    unit = s.to_unit(raw)
    assert unit.dtype == torch.float32 and unit[:, 1].eq(0).all()  # a constant feature scales to 0
    assert torch.allclose(unit[:, 0], torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(s.to_original(unit), raw)
    assert s.to_unit(torch.tensor([[10.0, 5.0, 0.0]]))[0].tolist() == [1.0, 0.0, 0.0]  # clipped
    with pytest.raises(ValueError, match="high >= low"):
        FeatureScaling(low=(1.0,), high=(0.0,))
    with pytest.raises(ValueError, match=r"expected \(N, 3, ...\)"):
        s.to_original(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        FeatureScaling.fit(torch.tensor([[float("nan")]]))


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_string_labels_named_column_and_scaling(tmp_path: Path) -> None:
    rows = ["height,species,weight"] + [f"{h},{s},{w}" for h, s, w in
                                         [(1.0, "cat", 4), (2.0, "dog", 8), (3.0, "cat", 6), (5.0, "dog", 10)]]
    path = _csv(tmp_path, "\n".join(rows) + "\n")
    ds = load_csv(path, label="species")
    assert ds.kind == "table" and ds.feature_names == ("height", "weight")
    assert ds.class_names == ("cat", "dog") and ds.y.tolist() == [0, 1, 0, 1]
    assert ds.x[:, 0].tolist() == [0.0, 0.25, 0.5, 1.0] and ds.scaling.low == (1.0, 4.0)
    # by default the column named "label"/"target"/"class"/"y", else the last; by index too
    assert load_csv(_csv(tmp_path, "a,target,b\n0.5,1,2\n0.1,0,3\n", "u.csv")).feature_names == ("a", "b")
    assert load_csv(_csv(tmp_path, "a,b\n0.5,1\n0.1,0\n", "v.csv")).feature_names == ("a",)
    assert load_csv(path, label=1).feature_names == ("height", "weight")
    with pytest.raises(ValueError, match="pass label='species' if it is the label"):
        load_dataset(f"csv:{path}")  # the last column (weight) by default: species is then a feature


def test_csv_integer_labels_keep_their_numbers_or_are_encoded(tmp_path: Path) -> None:
    kept = load_csv(_csv(tmp_path, "f,label\n1,2\n2,0\n3,1\n"))
    assert kept.y.tolist() == [2, 0, 1] and kept.class_names == ("0", "1", "2")
    encoded = load_csv(_csv(tmp_path, "f,label\n1,10\n2,30\n3,10\n", "e.csv"))
    assert encoded.y.tolist() == [0, 1, 0] and encoded.class_names == ("10", "30")


def test_csv_split_fits_the_scaling_on_train_rows(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    values = rng.normal(size=(40, 3)) * [1, 10, 100]
    labels = np.arange(40) % 2
    text = "a,b,c,label\n" + "".join(f"{a},{b},{c},{k}\n" for (a, b, c), k in zip(values, labels))
    path = _csv(tmp_path, text)
    train, test = load_csv(path, split="train"), load_csv(path, split="test")
    assert len(train) == 30 and len(test) == 10 and (test.y == 1).sum() == 5
    assert torch.equal(train.x.amin(0), torch.zeros(3)) and torch.equal(train.x.amax(0), torch.ones(3))
    assert test.scaling == train.scaling
    assert "train split (30 rows)" in train.scaling.fitted_on


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("colour,size,label\nred,1,0\nblue,2,1\n", {}, r"feature column 'colour' is not numeric \(e.g. 'red'\); "
                                                       "encode it as numbers \\(one-hot.*or drop it"),
        ("a,label\n1,0\n,1\n", {}, r"column 'a' has missing or non-finite values \(line 3\)"),
        ("a,label\n1,0\nnan,1\n", {}, "missing or non-finite"),
        ("a,label\n1,0\n2\n", {}, "line 3 has 1 fields but the header has 2"),
        ("a,label\n", {}, "at least one data row"),
        ("a;label\n1;0\n", {}, "delimiter"),
        ("a,label\n1,0\n", {"label": "kind"}, r"no column named 'kind'; the columns are \['a', 'label'\]"),
        ("a,label\n1,0\n", {"label": 5}, "out of range"),
        ("a,label\n1,0\n2,\n", {}, "label column has empty cells"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_csv(_csv(tmp_path, text), **kwargs)


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="csv file not found"):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")
