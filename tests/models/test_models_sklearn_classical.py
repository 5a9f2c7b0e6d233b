"""Classical learners as first-class models (issue #14 item 1): kernel SVMs and Gaussian naive
Bayes converted exactly, trees / forests / k-NN as models without gradients, the soft k-NN
surrogate, and estimator files through skops (never pickle)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC, LinearSVC, NuSVC
from sklearn.tree import DecisionTreeClassifier

from advlab.attacks import PGD, HopSkipJump
from advlab.models import EstimatorModule, SoftKNN, as_model, load_sklearn, save_sklearn
from advlab.models.sklearn import SklearnScores, from_sklearn, is_differentiable
from advlab.oracle import Oracle


@pytest.fixture(scope="module")
def data(digits):
    return (digits["x_train"][:700].flatten(1).double().numpy(), digits["y_train"][:700].numpy(),
            digits["x_test"][:150], digits["y_test"][:150])


def _ref(est, x: np.ndarray) -> np.ndarray:
    ref = est.decision_function(x)
    return np.stack([-ref / 2, ref / 2], 1) if ref.ndim == 1 else ref


SVMS = [
    lambda: SVC(kernel="rbf", gamma="scale"),
    lambda: SVC(kernel="rbf", gamma=0.05, C=10.0, decision_function_shape="ovo"),
    lambda: SVC(kernel="poly", degree=3, coef0=1.0),
    lambda: SVC(kernel="linear"),
    lambda: SVC(kernel="sigmoid", gamma=0.01),
    lambda: NuSVC(nu=0.2),
]


@pytest.mark.parametrize("make", SVMS, ids=["rbf", "rbf-ovo", "poly", "linear", "sigmoid", "nusvc"])
@pytest.mark.parametrize("binary", [False, True], ids=["10-class", "binary"])
def test_kernel_svms_equal_decision_function(make, binary, data):
    xtr, ytr, _, _ = data
    yy = (ytr > 4).astype(int) if binary else ytr
    est = make().fit(xtr, yy)
    model = from_sklearn(est, input_shape=(1, 8, 8), dtype=torch.float64)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        z = model(x).numpy()
    flat = x.flatten(1).numpy()
    # the one-vs-rest shape of the votes (whatever shape the estimator answers in)
    if not binary and est.decision_function_shape == "ovo":
        est.decision_function_shape = "ovr"
    assert np.abs(z - _ref(est, flat)).max() < 1e-6
    # on the data the argmax is the estimator's prediction (on uniform noise far from the data the
    # pairwise votes tie often, and scikit-learn's own ovr decision_function then breaks the tie by
    # confidence where predict takes the lowest class: 11% disagree there, in scikit-learn itself)
    real = data[2].double()
    with torch.no_grad():
        agree = (model(real).argmax(1).numpy() == est.predict(real.flatten(1).numpy())).mean()
    assert agree >= 0.98


def test_gaussian_nb_equals_predict_proba_and_its_joint_log_likelihood(data):
    xtr, ytr, _, _ = data
    est = GaussianNB(var_smoothing=1e-2).fit(xtr, ytr)
    model = from_sklearn(est, input_shape=(64,), dtype=torch.float64)
    x = torch.rand(64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    joint = est.predict_joint_log_proba(x.numpy())
    assert np.abs(z.numpy() - joint).max() <= 1e-9 * np.abs(joint).max()
    assert np.abs(torch.softmax(z, 1).numpy() - est.predict_proba(x.numpy())).max() < 1e-6


def test_converted_gradients_equal_finite_differences(data):
    xtr, ytr, _, _ = data
    for est in (SVC(gamma=0.05).fit(xtr, ytr), GaussianNB(var_smoothing=1e-2).fit(xtr, ytr)):
        model = from_sklearn(est, input_shape=(64,), dtype=torch.float64)
        x = torch.rand(1, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        x.requires_grad_(True)
        model(x)[0, 3].backward()
        e = torch.zeros_like(x)
        e[0, 10] = 1e-6
        with torch.no_grad():
            fd = (model(x + e)[0, 3] - model(x - e)[0, 3]) / 2e-6
        assert abs(float(x.grad[0, 10]) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


def test_a_white_box_attack_on_the_rbf_svm_fools_the_svm(data):
    xtr, ytr, x, y = data
    est = SVC(gamma="scale").fit(xtr, ytr)
    model = from_sklearn(est, input_shape=(1, 8, 8))
    ok = torch.as_tensor(est.predict(x.flatten(1).double().numpy()) == y.numpy())
    r = PGD(eps=0.2, steps=20)(model, x[ok], y[ok])
    fooled = est.predict(r.x_adv.flatten(1).double().numpy()) != y[ok].numpy()
    # success is the converted model's: its argmax is scikit-learn's decision_function's, which
    # breaks a tie in the pairwise votes by confidence where predict takes the lowest class; an
    # adversarial point sits on such ties more often than a clean one
    assert (fooled == r.success.numpy()).mean() >= 0.9
    # the exact logits' votes are flat: the confidences give PGD a better surface (64% vs 82% here)
    smooth = from_sklearn(est, input_shape=(1, 8, 8), svm_output="confidence")
    r2 = PGD(eps=0.2, steps=20)(smooth, x[ok], y[ok])
    fooled2 = est.predict(r2.x_adv.flatten(1).double().numpy()) != y[ok].numpy()
    assert fooled.mean() > 0.5 and fooled2.mean() > fooled.mean() + 0.05, (fooled.mean(), fooled2.mean())


def test_trees_forests_and_knn_answer_as_models_without_gradients(data):
    xtr, ytr, x, y = data
    flat = x.flatten(1).double().numpy()
    for est in (DecisionTreeClassifier(random_state=0), RandomForestClassifier(n_estimators=10, random_state=0),
                KNeighborsClassifier(3)):
        est.fit(xtr, ytr)
        assert not is_differentiable(est)
        model = as_model(est, input_shape=(1, 8, 8))
        assert isinstance(model, EstimatorModule) and not model.training
        with torch.no_grad():
            z = model(x)
        assert np.array_equal(z.argmax(1).numpy(), est.predict(flat))
        assert np.allclose(torch.softmax(z.double(), 1).numpy(), est.predict_proba(flat), atol=1e-6)
        with pytest.raises(ValueError, match="needs gradients"):
            PGD(eps=0.1)(model, x[:4], y[:4])
    # ... and a decision-based attack reaches them through the oracle
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(xtr, ytr)
    oracle = Oracle(as_model(forest, input_shape=(1, 8, 8)), output="label", budget=400)
    r = HopSkipJump(norm="l2", budget=400)(oracle, x[:8], y[:8])
    assert (forest.predict(r.x_adv[r.success].flatten(1).double().numpy()) != y[:8][r.success].numpy()).all()
    assert r.success.float().mean() >= 0.5 and (r.queries <= 400).all()


def test_soft_knn_follows_the_knn_and_its_adversarial_examples_fool_the_knn(data):
    xtr, ytr, x, y = data
    knn = KNeighborsClassifier(5).fit(xtr, ytr)
    surrogate = SoftKNN(knn, input_shape=(1, 8, 8))
    flat = x.flatten(1).double().numpy()
    with torch.no_grad():
        agree = (surrogate(x).argmax(1).numpy() == knn.predict(flat)).mean()
    assert agree >= 0.95
    ok = torch.as_tensor(knn.predict(flat) == y.numpy())
    eps = 0.3
    r = PGD(eps=eps, steps=20)(surrogate, x[ok], y[ok])
    fooled = (knn.predict(r.x_adv.flatten(1).double().numpy()) != y[ok].numpy()).mean()
    g = torch.Generator().manual_seed(0)
    noise = (x[ok] + eps * torch.randint(0, 2, x[ok].shape, generator=g).mul(2).sub(1)).clamp(0, 1)
    noise_fooled = (knn.predict(noise.flatten(1).double().numpy()) != y[ok].numpy()).mean()
    assert fooled > 0.5 and fooled > 3 * noise_fooled, (fooled, noise_fooled)


class _Custom(BaseEstimator, ClassifierMixin):
    def fit(self, x, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x):
        return np.full((len(x), len(self.classes_)), 1 / len(self.classes_))


def test_estimator_files_go_through_skops_and_never_pickle(tmp_path, data):
    pytest.importorskip("skops")
    xtr, ytr, x, _ = data
    est = SVC(gamma="scale").fit(xtr, ytr)
    path = save_sklearn(est, tmp_path / "svm.skops")
    back = load_sklearn(path)
    flat = x.flatten(1).double().numpy()
    assert np.array_equal(back.decision_function(flat), est.decision_function(flat))
    pkl = tmp_path / "svm.pkl"
    pkl.write_bytes(pickle.dumps(est))
    with pytest.raises(ValueError, match="pickle"):
        load_sklearn(pkl)
    other = tmp_path / "svm.bin"
    other.write_bytes(pickle.dumps(est))
    with pytest.raises(ValueError, match="pickle"):
        load_sklearn(other)
    custom = save_sklearn(_Custom().fit(xtr, ytr), tmp_path / "custom.skops")
    with pytest.raises(ValueError, match="not trusted: .*_Custom"):
        load_sklearn(custom)
    with pytest.raises(FileNotFoundError):
        load_sklearn(tmp_path / "missing.skops")


def test_bad_estimators_are_refused_clearly(data):
    xtr, ytr, _, _ = data
    with pytest.raises(ValueError, match="not fitted"):
        as_model(DecisionTreeClassifier(), input_shape=(64,))
    with pytest.raises(ValueError, match="not fitted"):
        SoftKNN(KNeighborsClassifier(), input_shape=(64,))
    with pytest.raises(ValueError, match="has no predict_proba"):
        SklearnScores(LinearSVC().fit(xtr, ytr), method="predict_proba")
    with pytest.raises(TypeError, match="KNeighborsClassifier"):
        SoftKNN(DecisionTreeClassifier().fit(xtr, ytr), input_shape=(64,))
    with pytest.raises(ValueError, match="features"):
        as_model(DecisionTreeClassifier().fit(xtr, ytr), input_shape=(1, 7, 7))
    with pytest.raises(ValueError, match="temperature"):
        SoftKNN(KNeighborsClassifier().fit(xtr, ytr), input_shape=(64,), temperature=-1.0)
    with pytest.raises(ValueError, match="callable kernel"):
        from_sklearn(SVC(kernel=lambda a, b: a @ b.T).fit(xtr, ytr), input_shape=(64,))
