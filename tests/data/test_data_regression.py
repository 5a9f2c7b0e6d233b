"""load_diabetes_regression: scikit-learn's bundled diabetes data, scaled into a box, split with a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes

from advlab.data import RegressionData, load_diabetes_regression


@pytest.fixture(scope="module")
def data() -> RegressionData:
    return load_diabetes_regression()


def test_shapes_split_and_box(data):
    assert data.x_train.shape == (331, 10) and data.x_test.shape == (111, 10)
    assert data.y_train.shape == (331,) and data.y_test.shape == (111,)
    assert data.x_train.dtype == data.y_train.dtype == torch.float32
    x = torch.cat([data.x_train, data.x_test])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # every feature spans the box
    assert torch.equal(x.amin(0), torch.zeros(10)) and torch.equal(x.amax(0), torch.ones(10))
    assert data.feature_names == ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    assert [f.kind for f in data.features].count("binary") == 1 and data.features[1].kind == "binary"
    assert "scikit-learn" in data.source and "seed 0" in data.source


def test_target_is_standardised_on_train_and_maps_back_to_the_raw_target(data):
    assert abs(float(data.y_train.mean())) < 1e-5
    assert float(data.y_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    raw = torch.cat([data.to_raw_target(data.y_train), data.to_raw_target(data.y_test)])
    expected = np.sort(load_diabetes().target)
    assert np.allclose(np.sort(raw.numpy()), expected, atol=1e-3)
    plain = load_diabetes_regression(standardise_target=False)
    assert torch.allclose(plain.y_test, data.to_raw_target(data.y_test), atol=1e-3)


def test_features_map_back_to_raw_units(data):
    raw = load_diabetes(scaled=False).data
    back = data.to_raw_features(torch.cat([data.x_train, data.x_test])).double().numpy()
    # the same rows (train, then test, each sorted by index): compare as sets of rows
    assert np.allclose(np.sort(back, axis=0), np.sort(raw, axis=0), rtol=1e-5, atol=1e-4)
    assert data.features[0].low == 19.0 and data.features[0].high == 79.0  # age in years
    with pytest.raises(ValueError, match=r"shape \(N, 10\)"):
        data.to_raw_features(torch.zeros(3, 4))


def test_seed_and_bounds_and_noise_features():
    a, b = load_diabetes_regression(seed=1), load_diabetes_regression(seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, load_diabetes_regression(seed=2).x_train)
    wide = load_diabetes_regression(bounds=(-1.0, 1.0), noise_features=5, test_fraction=0.5)
    assert wide.x_train.shape == (221, 15) and wide.x_test.shape == (221, 15)
    assert float(wide.x_train.min()) >= -1.0 and float(wide.x_train.max()) <= 1.0
    assert [f.kind for f in wide.features[10:]] == ["noise"] * 5
    # the noise columns are unrelated to the target: correlation near 0, unlike bmi's (~0.59)
    corr = np.corrcoef(wide.x_train.numpy().T, wide.y_train.numpy())[-1, :-1]
    assert corr[2] > 0.45 and np.abs(corr[10:]).max() < 0.2


@pytest.mark.parametrize("kwargs,match", [
    (dict(bounds=(1.0, 0.0)), "lo < hi"),
    (dict(test_fraction=1.0), "test_fraction must be in"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(noise_features=-2), "noise_features must be an integer"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_diabetes_regression(**kwargs)
