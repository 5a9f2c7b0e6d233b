"""scikit-learn estimators as exact torch modules, and as query callables for oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import LinearSVC

from advlab.attacks import PGD, SquareAttack
from advlab.models.sklearn import SklearnScores, from_sklearn
from advlab.oracle import Oracle


@pytest.fixture(scope="module")
def flat(digits):
    return (digits["x_train"].flatten(1).double().numpy(), digits["y_train"].numpy(),
            digits["x_test"][:200], digits["y_test"][:200])


def _probs(model, x):
    with torch.no_grad():
        return torch.softmax(model(x).double(), 1).numpy()


def test_logistic_regression_is_reproduced_exactly(flat):
    xtr, ytr, x, y = flat
    clf = LogisticRegression(max_iter=300).fit(xtr, ytr)
    model = from_sklearn(clf, input_shape=(1, 8, 8))
    ref = clf.predict_proba(x.flatten(1).double().numpy())
    assert np.abs(_probs(model, x) - ref).max() < 1e-5
    assert not model.training


def test_binary_linear_models_get_two_logits(flat):
    xtr, ytr, x, _ = flat
    yb = (ytr >= 5).astype(int)
    for clf in (LogisticRegression(max_iter=300).fit(xtr, yb), LinearSVC().fit(xtr, yb)):
        model = from_sklearn(clf, input_shape=(1, 8, 8))
        with torch.no_grad():
            logits = model(x)
        assert logits.shape == (len(x), 2)
        assert np.array_equal(logits.argmax(1).numpy(), clf.predict(x.flatten(1).double().numpy()))
        if hasattr(clf, "predict_proba"):
            assert np.abs(_probs(model, x) - clf.predict_proba(x.flatten(1).double().numpy())).max() < 1e-5


def test_mlp_and_sgd_are_reproduced(flat):
    xtr, ytr, x, _ = flat
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0).fit(xtr, ytr)
    model = from_sklearn(mlp, input_shape=(1, 8, 8))
    assert np.abs(_probs(model, x) - mlp.predict_proba(x.flatten(1).double().numpy())).max() < 1e-5
    sgd = SGDClassifier(random_state=0).fit(xtr, ytr)
    m2 = from_sklearn(sgd, input_shape=(1, 8, 8))
    with torch.no_grad():
        z = m2(x).double().numpy()
    assert np.abs(z - sgd.decision_function(x.flatten(1).double().numpy())).max() < 1e-3


def test_white_box_attack_on_a_converted_estimator_fools_the_estimator(flat):
    xtr, ytr, x, y = flat
    clf = LogisticRegression(max_iter=300).fit(xtr, ytr)
    model = from_sklearn(clf, input_shape=(1, 8, 8))
    res = PGD(eps=0.3, steps=20)(model, x, y)
    fooled = clf.predict(res.x_adv.flatten(1).double().numpy()) != y.numpy()
    # measured 1.00 on these 200 points; the estimator itself (not the module) is fooled
    assert fooled.mean() > 0.9
    assert np.array_equal(fooled, res.success.numpy())


def test_any_estimator_behind_an_oracle(flat):
    xtr, ytr, x, y = flat
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(xtr, ytr)
    scores = SklearnScores(forest)
    oracle = Oracle(scores, output="scores", budget=300)
    correct = torch.as_tensor(forest.predict(x.flatten(1).double().numpy())) == y
    xs, ys = x[correct][:40], y[correct][:40]
    res = SquareAttack(eps=0.3, budget=300)(oracle, xs, ys, generator=torch.Generator().manual_seed(0))
    fooled = forest.predict(res.x_adv.flatten(1).double().numpy()) != ys.numpy()
    assert np.array_equal(fooled, res.success.numpy())
    assert res.success.float().mean() > 0.5 and int(res.queries.max()) <= 300
    with pytest.raises(TypeError, match="not differentiable"):
        from_sklearn(forest, input_shape=(1, 8, 8))


def test_bad_input(flat):
    xtr, ytr, _, _ = flat
    with pytest.raises(ValueError, match="not fitted"):
        from_sklearn(LogisticRegression(), input_shape=(1, 8, 8))
    clf = LogisticRegression(max_iter=200).fit(xtr, ytr)
    with pytest.raises(ValueError, match="features"):
        from_sklearn(clf, input_shape=(1, 7, 7))
    shifted = LogisticRegression(max_iter=200).fit(xtr, ytr + 1)
    with pytest.raises(ValueError, match="0..K-1"):
        from_sklearn(shifted, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="expected inputs of shape"):
        from_sklearn(clf, input_shape=(1, 8, 8))(torch.zeros(2, 64))
