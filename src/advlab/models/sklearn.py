"""scikit-learn classifiers in advlab: as exact torch modules (white-box) or as query callables.

Two ways in, depending on what the estimator is and what the threat model allows:

* :func:`from_sklearn` converts a fitted *differentiable* estimator into an ``nn.Module`` that
  returns logits equal (to float precision) to the estimator's: ``LogisticRegression`` (binary and
  multinomial), linear SVMs and ``SGDClassifier`` (``decision_function`` as logits), and
  ``MLPClassifier`` (its layers and activation), ``SVC`` with an RBF (or linear, polynomial,
  sigmoid) kernel, and ``GaussianNB``. Every white-box attack then applies, and
  :func:`advlab.evaluation.transfer_matrix` can mix learning techniques (Papernot et al. 2016).
* :func:`as_model` gives *any* fitted classifier a model's face: the exact conversion when there
  is one, else an :class:`EstimatorModule` (trees, forests, k-NN) that answers without
  gradients, for :class:`advlab.attacks.TreeAttack`, decision-based attacks and evaluations;
  :class:`SoftKNN` is a differentiable surrogate of a k-NN for white-box attacks.
* :class:`SklearnScores` wraps *any* fitted classifier (trees, forests, k-NN, kernel SVMs) as a
  callable that answers ``predict_proba`` (or ``decision_function``) on a batch of images, for
  :class:`advlab.oracle.Oracle` and the black-box attacks.

Inputs keep advlab's image layout ``(B, C, H, W)``; the estimator sees them flattened,
``x.reshape(B, -1)``, which is how it must have been fitted.

Example:
    >>> clf = LogisticRegression(max_iter=500).fit(x_train.flatten(1).numpy(), y_train.numpy())
    >>> model = from_sklearn(clf, input_shape=(1, 8, 8))        # white-box: PGD(...)(model, x, y)
    >>> oracle = Oracle(SklearnScores(RandomForestClassifier().fit(...)), output="label")
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["EstimatorModule", "GaussianNBLogits", "SVCLogits", "SklearnModel", "SklearnScores", "SoftKNN", "as_model",
           "from_sklearn", "is_differentiable", "load_sklearn", "save_sklearn"]


def _fitted(estimator: Any) -> None:
    if not hasattr(estimator, "classes_"):
        raise ValueError(f"{type(estimator).__name__} is not fitted (no classes_); fit it first")
    classes = np.asarray(estimator.classes_)
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"the estimator's classes_ must be 0..K-1 so that logit k is class k; got "
                         f"{classes.tolist()[:10]}. Fit it on integer labels 0..K-1")


def _check_shape(input_shape: Sequence[int], n_features: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if int(np.prod(shape)) != n_features:
        raise ValueError(f"input_shape {shape} has {int(np.prod(shape))} features but the estimator was "
                         f"fitted on {n_features}")
    return shape


class _Flatten(nn.Module):
    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = input_shape

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected inputs of shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)


class _BinaryLogits(nn.Module):
    """One decision value z → two logits ``(-z/2, z/2)``: softmax gives ``sigmoid(z)`` for class 1."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([-z / 2, z / 2], dim=1)


def _linear(coef: np.ndarray, intercept: np.ndarray, dtype: torch.dtype) -> nn.Linear:
    layer = nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(coef, dtype=dtype))
        layer.bias.copy_(torch.as_tensor(np.array(np.broadcast_to(intercept, (coef.shape[0],))), dtype=dtype))
    return layer.to(dtype)


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}


def from_sklearn(estimator: Any, *, input_shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 svm_output: str = "decision_function") -> nn.Module:
    """An ``nn.Module`` (eval mode) whose logits reproduce a fitted scikit-learn classifier.

    Supported: ``LogisticRegression``, ``LinearSVC``, ``SGDClassifier``, ``RidgeClassifier`` and
    any linear model with ``coef_``/``intercept_`` (logits = ``decision_function``; for
    ``LogisticRegression`` ``softmax(logits)`` equals ``predict_proba``), ``MLPClassifier``
    (layers, activation; softmax or logistic output), ``SVC``/``NuSVC`` with an RBF, linear,
    polynomial or sigmoid kernel (:class:`SVCLogits`: ``decision_function`` as a sum of kernels
    over the support vectors; ``svm_output="confidence"`` gives gradient attacks a smoother
    surface) and ``GaussianNB`` (:class:`GaussianNBLogits`). A binary linear model gets two logits
    ``(-z/2, z/2)`` so that advlab's multi-class losses apply. Other estimators are not
    differentiable: query them through :class:`SklearnScores` and an ``Oracle``.
    """
    _fitted(estimator)
    name = type(estimator).__name__
    if hasattr(estimator, "coefs_") and hasattr(estimator, "intercepts_"):  # MLPClassifier
        n_features = estimator.coefs_[0].shape[0]
        layers: list[nn.Module] = [_Flatten(_check_shape(input_shape, n_features))]
        act = _ACTIVATIONS.get(estimator.activation)
        if act is None:
            raise ValueError(f"unsupported MLP activation {estimator.activation!r}")
        for i, (w, b) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
            layers.append(_linear(w.T, b, dtype))
            if i < len(estimator.coefs_) - 1:
                layers.append(act())
        if estimator.coefs_[-1].shape[1] == 1:  # binary: one logistic output unit
            layers.append(_BinaryLogits())
        model = nn.Sequential(*layers)
    elif hasattr(estimator, "support_vectors_") and hasattr(estimator, "dual_coef_"):  # SVC, NuSVC
        svc = SVCLogits(estimator, dtype=dtype, output=svm_output)
        model = nn.Sequential(_Flatten(_check_shape(input_shape, _n_features(estimator))), svc)
    elif hasattr(estimator, "theta_") and hasattr(estimator, "var_"):  # GaussianNB
        model = nn.Sequential(_Flatten(_check_shape(input_shape, estimator.theta_.shape[1])),
                              GaussianNBLogits(estimator, dtype=dtype))
    elif hasattr(estimator, "coef_") and hasattr(estimator, "intercept_"):
        coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
        mods: list[nn.Module] = [_Flatten(_check_shape(input_shape, coef.shape[1])), _linear(coef, intercept, dtype)]
        if coef.shape[0] == 1:
            mods.append(_BinaryLogits())
        elif name == "LogisticRegression" and getattr(estimator, "multi_class", "auto") == "ovr":
            raise ValueError("a one-vs-rest LogisticRegression's probabilities are not a softmax of "
                             "logits; fit it with the (default) multinomial loss")
        model = nn.Sequential(*mods)
    else:
        raise TypeError(f"{name} is not differentiable (no coef_, coefs_, support vectors or Gaussian "
                        "class densities); advlab.models.as_model(...) wraps it as a model without "
                        "gradients, for the tree attack, decision-based attacks and evaluations")
    return model.eval()


class SklearnScores:
    """Any fitted scikit-learn classifier as a callable ``x (B, C, H, W) -> scores (B, K)``.

    Answers ``predict_proba`` when the estimator has it, else ``decision_function`` (two columns
    ``(-z/2, z/2)`` for a binary one), computed on ``x.reshape(B, -1)`` in float64. Meant for
    ``Oracle(SklearnScores(clf), output="scores" | "label")``.
    """

    def __init__(self, estimator: Any, *, method: str | None = None) -> None:
        _fitted(estimator)
        if method is None:
            method = "predict_proba" if hasattr(estimator, "predict_proba") else "decision_function"
        if not hasattr(estimator, method):
            raise ValueError(f"{type(estimator).__name__} has no {method}")
        self.estimator, self.method = estimator, method

    def __call__(self, x: Tensor) -> np.ndarray:
        flat = x.detach().reshape(x.shape[0], -1).cpu().numpy().astype(np.float64)
        scores = np.asarray(getattr(self.estimator, self.method)(flat), dtype=np.float64)
        if scores.ndim == 1:
            scores = np.stack([-scores / 2, scores / 2], axis=1)
        return scores

    def __repr__(self) -> str:
        return f"SklearnScores({type(self.estimator).__name__}, method={self.method!r})"


# -- kernel SVMs, Gaussian naive Bayes -----------------------------------------------------------


def _kernel_matrix(x: Tensor, sv: Tensor, *, kernel: str, gamma: float, degree: int, coef0: float) -> Tensor:
    """``K(x_i, s_j)`` ``(B, S)`` for libsvm's kernels (``x`` ``(B, D)``, ``sv`` ``(S, D)``)."""
    if kernel == "rbf":
        # ||x - s||² expanded; clamped at 0 against cancellation
        d2 = (x * x).sum(1, keepdim=True) - 2 * x @ sv.T + (sv * sv).sum(1)[None, :]
        return torch.exp(-gamma * d2.clamp_min(0))
    dot = x @ sv.T
    if kernel == "linear":
        return dot
    if kernel == "poly":
        return (gamma * dot + coef0) ** degree
    if kernel == "sigmoid":
        return torch.tanh(gamma * dot + coef0)
    raise ValueError(f"unsupported SVC kernel {kernel!r}: use rbf, linear, poly or sigmoid "
                     "(a precomputed or callable kernel has no input-space form)")


class SVCLogits(nn.Module):
    """A fitted ``sklearn.svm.SVC`` / ``NuSVC`` as logits: its ``decision_function``, exactly.

    libsvm's one-vs-one decision value for the class pair ``(i, j)``, ``i < j``, is a sum of
    kernels over the support vectors of both classes::

        d_ij(x) = Σ_{s ∈ SV_i} α^{(j-1)}_s K(s, x) + Σ_{s ∈ SV_j} α^{(i)}_s K(s, x) + b_ij

    (``α = dual_coef_``, ``b = intercept_``). With K classes the logits are scikit-learn's
    one-vs-rest shape of those votes, ``votes_k + c_k / (3 (|c_k| + 1))`` where ``c_k`` sums the
    confidences ``±d_ij`` for class k (``sklearn.utils.multiclass._ovr_decision_function``): the
    votes are piecewise constant, so the gradient comes from the confidences. A binary SVC's
    single value ``d(x) = Σ_s α_s K(s, x) + b`` becomes two logits ``(-d/2, d/2)``.

    ``output="confidence"`` returns ``c_k`` alone: not the estimator's scores, but a smooth
    surface for gradient attacks. The exact logits' votes are flat and the squashing
    ``c / (3(|c| + 1))`` flattens the gradient where ``|c|`` is large: on digits (RBF SVC,
    L∞ ε = 0.2, PGD-20) the exact logits let 64% of the points be fooled, the confidences 82%.
    """

    def __init__(self, estimator: Any, *, dtype: torch.dtype, output: str = "decision_function") -> None:
        super().__init__()
        if output not in ("decision_function", "confidence"):
            raise ValueError(f"unknown SVM output {output!r}: use 'decision_function' (exact) or 'confidence'")
        self.output = output
        kernel = estimator.kernel
        if not isinstance(kernel, str):
            raise ValueError("an SVC with a callable kernel has no input-space form to convert")
        self.kernel, self.degree = kernel, int(getattr(estimator, "degree", 3))
        self.gamma, self.coef0 = float(estimator._gamma), float(getattr(estimator, "coef0", 0.0))
        _kernel_matrix(torch.zeros(1, 1), torch.zeros(1, 1), kernel=kernel, gamma=1.0, degree=1, coef0=0.0)
        self.register_buffer("sv", torch.as_tensor(np.asarray(estimator.support_vectors_), dtype=dtype))
        self.register_buffer("alpha", torch.as_tensor(np.asarray(estimator.dual_coef_), dtype=dtype))
        self.register_buffer("b", torch.as_tensor(np.asarray(estimator.intercept_), dtype=dtype))
        n_support = [int(v) for v in estimator.n_support_]
        self.n_classes = len(n_support)
        starts = np.concatenate([[0], np.cumsum(n_support)])
        # for each pair (i, j): a (S,) weight vector, α^{(j-1)} on SV_i and α^{(i)} on SV_j
        weights = []
        alpha = np.asarray(estimator.dual_coef_, dtype=np.float64)
        if self.n_classes > 2:
            for i in range(self.n_classes):
                for j in range(i + 1, self.n_classes):
                    w = np.zeros(alpha.shape[1])
                    w[starts[i]:starts[i + 1]] = alpha[j - 1, starts[i]:starts[i + 1]]
                    w[starts[j]:starts[j + 1]] = alpha[i, starts[j]:starts[j + 1]]
                    weights.append(w)
            self.register_buffer("pair_w", torch.as_tensor(np.stack(weights, 1), dtype=dtype))  # (S, P)
            pairs = [(i, j) for i in range(self.n_classes) for j in range(i + 1, self.n_classes)]
            lose = torch.zeros(len(pairs), self.n_classes, dtype=dtype)
            win = torch.zeros_like(lose)
            for p, (i, j) in enumerate(pairs):
                lose[p, i], win[p, j] = 1, 1
            self.register_buffer("first", lose)  # (P, K): class i of pair p
            self.register_buffer("second", win)  # (P, K): class j of pair p

    def decision(self, flat: Tensor) -> Tensor:
        """The one-vs-one decision values ``(B, P)`` (binary: ``(B, 1)``)."""
        k = _kernel_matrix(flat, self.sv.to(flat.dtype), kernel=self.kernel, gamma=self.gamma,
                           degree=self.degree, coef0=self.coef0)
        if self.n_classes == 2:
            return k @ self.alpha[0].to(flat.dtype)[:, None] + self.b.to(flat.dtype)
        return k @ self.pair_w.to(flat.dtype) + self.b.to(flat.dtype)

    def forward(self, flat: Tensor) -> Tensor:
        d = self.decision(flat)
        if self.n_classes == 2:
            return torch.cat([-d / 2, d / 2], dim=1)
        first, second = self.first.to(d.dtype), self.second.to(d.dtype)
        # d_ij > 0 votes for i (libsvm: predictions = d < 0 vote j); confidences -d for j, +d for i
        conf = d @ first - d @ second
        if self.output == "confidence":
            return conf
        votes = (d > 0).to(d.dtype) @ first + (d <= 0).to(d.dtype) @ second
        return votes + conf / (3 * (conf.abs() + 1))


class GaussianNBLogits(nn.Module):
    """A fitted ``sklearn.naive_bayes.GaussianNB`` as logits: its joint log-likelihood,

        z_k(x) = log π_k − ½ Σ_i [log(2π σ²_ki) + (x_i − θ_ki)² / σ²_ki]

    so that ``softmax(z)`` is ``predict_proba`` and ``z`` is ``predict_joint_log_proba``."""

    def __init__(self, estimator: Any, *, dtype: torch.dtype) -> None:
        super().__init__()
        theta = np.asarray(estimator.theta_, dtype=np.float64)
        var = np.asarray(estimator.var_, dtype=np.float64)
        prior = np.asarray(estimator.class_prior_, dtype=np.float64)
        const = np.log(prior) - 0.5 * np.log(2 * np.pi * var).sum(1)
        self.register_buffer("theta", torch.as_tensor(theta, dtype=dtype))
        self.register_buffer("inv_var", torch.as_tensor(1 / var, dtype=dtype))
        self.register_buffer("const", torch.as_tensor(const, dtype=dtype))

    def forward(self, flat: Tensor) -> Tensor:
        diff = flat[:, None, :] - self.theta.to(flat.dtype)[None]  # (B, K, D)
        return self.const.to(flat.dtype) - 0.5 * (diff * diff * self.inv_var.to(flat.dtype)).sum(2)


# -- estimators with no gradient: trees, forests, k-NN, anything with predict_proba ---------------


class EstimatorModule(nn.Module):
    """Any fitted scikit-learn classifier as an ``nn.Module`` that *answers* but has no gradient.

    Its forward pass returns ``log predict_proba`` (probabilities floored at ``1e-12``) as
    logits, so argmax is the estimator's prediction, an :class:`~advlab.oracle.Oracle` can query
    it, and ``evaluate`` and ``transfer_matrix`` can measure it like any model. It is marked
    ``differentiable = False``: a gradient attack on it is refused with a message naming what
    works (:class:`~advlab.attacks.TreeAttack` for a decision tree, a decision-based attack, or a
    surrogate such as :class:`SoftKNN` for k-NN). ``estimator`` is the fitted estimator itself,
    which white-box structural attacks (the tree attack) read.
    """

    differentiable = False

    def __init__(self, estimator: Any, *, input_shape: Sequence[int], method: str | None = None) -> None:
        super().__init__()
        self.scores = SklearnScores(estimator, method=method)
        self.estimator = estimator
        self.flatten = _Flatten(_check_shape(input_shape, _n_features(estimator)))
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        flat = self.flatten(x)
        s = torch.as_tensor(self.scores(flat), dtype=x.dtype if x.is_floating_point() else torch.float32,
                            device=x.device)
        if self.scores.method == "predict_proba":
            s = torch.log(s.clamp_min(1e-12))
        return s

    def __repr__(self) -> str:
        return f"EstimatorModule({type(self.estimator).__name__})"


def _n_features(estimator: Any) -> int:
    n = getattr(estimator, "n_features_in_", None)
    if n is None:
        raise ValueError(f"{type(estimator).__name__} does not say how many features it was fitted on "
                         "(no n_features_in_); fit it with scikit-learn >= 1.0")
    return int(n)


def is_differentiable(estimator: Any) -> bool:
    """Whether :func:`from_sklearn` converts ``estimator`` into a module with exact gradients."""
    if hasattr(estimator, "coefs_") and hasattr(estimator, "intercepts_"):
        return True
    if hasattr(estimator, "support_vectors_") and hasattr(estimator, "dual_coef_"):
        return isinstance(getattr(estimator, "kernel", None), str) and estimator.kernel != "precomputed"
    if hasattr(estimator, "theta_") and hasattr(estimator, "var_"):
        return True
    return hasattr(estimator, "coef_") and hasattr(estimator, "intercept_")


def as_model(estimator: Any, *, input_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fitted estimator as a model advlab can use anywhere: the exact differentiable conversion
    (:func:`from_sklearn`) when there is one, else an :class:`EstimatorModule` (trees, forests,
    k-NN, ...), which answers queries and is attacked by the tree attack, decision-based attacks
    or through a surrogate."""
    _fitted(estimator)
    if is_differentiable(estimator):
        return from_sklearn(estimator, input_shape=input_shape, dtype=dtype)
    if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")):
        raise ValueError(f"{type(estimator).__name__} has neither predict_proba nor decision_function; "
                         "advlab needs class scores")
    return EstimatorModule(estimator, input_shape=input_shape)


class SoftKNN(nn.Module):
    """A differentiable surrogate of a fitted ``KNeighborsClassifier``: soft nearest neighbours.

    Every training point votes for its class with a weight that decays with its squared distance,
    ``z_k(x) = log Σ_{i : y_i = k} exp(−||x − x_i||² / T)``: as ``T → 0`` the argmax is the
    1-nearest neighbour's class, and for a moderate ``T`` it follows the majority of the close
    neighbours (the kernel-density view of k-NN; cf. the "soft" nearest-neighbour surrogates of
    Papernot & McDaniel 2018 and Sitawarin & Wagner 2019). Only the ``k_max`` nearest training
    points of each input enter the sum (the others' weights underflow), so gradients are cheap.
    ``temperature=None`` takes the median squared distance from a training point to its
    ``n_neighbors``-th neighbour, divided by 4: the k nearest neighbours then carry most weight.
    Gradient attacks run on it; :class:`EstimatorModule` of the k-NN itself is the target.
    """

    def __init__(self, estimator: Any, *, input_shape: Sequence[int], temperature: float | None = None,
                 k_max: int = 64, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        _fitted(estimator)
        fit_x = getattr(estimator, "_fit_X", None)
        fit_y = getattr(estimator, "_y", None)
        if fit_x is None or fit_y is None or not hasattr(estimator, "n_neighbors"):
            raise TypeError(f"SoftKNN takes a fitted KNeighborsClassifier, got {type(estimator).__name__}")
        fit_x = np.asarray(fit_x, dtype=np.float64)
        self.flatten = _Flatten(_check_shape(input_shape, fit_x.shape[1]))
        self.num_classes = len(estimator.classes_)
        self.register_buffer("train_x", torch.as_tensor(fit_x, dtype=dtype))
        self.register_buffer("train_y", torch.as_tensor(np.asarray(fit_y), dtype=torch.long))
        self.k_max = int(min(k_max, fit_x.shape[0]))
        if temperature is None:
            k = int(min(estimator.n_neighbors, fit_x.shape[0] - 1))
            sample = torch.as_tensor(fit_x[:2000], dtype=torch.float64)
            d2 = torch.cdist(sample, torch.as_tensor(fit_x)).pow(2)
            kth = d2.topk(k + 1, dim=1, largest=False).values[:, -1]  # (the point itself is at 0)
            temperature = float(kth.median()) / 4
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        flat = self.flatten(x)
        tx = self.train_x.to(flat.dtype)
        d2 = ((flat * flat).sum(1, keepdim=True) - 2 * flat @ tx.T + (tx * tx).sum(1)[None]).clamp_min(0)
        near = d2.detach().topk(self.k_max, dim=1, largest=False).indices  # (B, k)
        logw = -d2.gather(1, near) / self.temperature  # (B, k)
        cls = self.train_y[near]  # (B, k)
        mask = torch.nn.functional.one_hot(cls, self.num_classes).to(flat.dtype)  # (B, k, K)
        z = logw[:, :, None] + torch.log(mask.clamp_min(1e-30))
        return torch.logsumexp(z, dim=1)

    def extra_repr(self) -> str:
        return f"train={tuple(self.train_x.shape)}, temperature={self.temperature:.4g}, k_max={self.k_max}"


# -- files: skops, never pickle ----------------------------------------------------------------

def save_sklearn(estimator: Any, path: str | Path) -> Path:
    """Write a fitted estimator with ``skops.io`` (a format that loads without running code)."""
    sio = _skops()
    path = Path(path)
    sio.dump(estimator, path)
    return path


#: scikit-learn's own internal types that skops leaves untrusted by default but that every fitted
#: tree, forest, boosted model, k-NN and MLP holds (its Cython tree, its distance metric, its
#: optimiser state). They are classes of scikit-learn itself, named exactly, so advlab trusts them;
#: any other type still needs ``trusted=``.
SKLEARN_INTERNALS = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64", "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})


def load_sklearn(path: str | Path, *, trusted: Sequence[str] = ()) -> Any:
    """Read an estimator saved with ``skops.io.dump``; pickle files are refused.

    skops trusts scikit-learn's public types, and advlab adds :data:`SKLEARN_INTERNALS` (the
    tree, distance-metric and optimiser classes fitted estimators hold); any other type in the
    file (a custom class, a function) is refused, naming them, unless listed in ``trusted`` after
    you have read it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no estimator file at {path}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\x80\x03", b"\x80\x04", b"\x80\x05") or path.suffix in (".pkl", ".pickle", ".joblib"):
        raise ValueError(f"{path} is a pickle file: advlab never unpickles (it can run any code). Save the "
                         "estimator with skops: advlab.models.save_sklearn(clf, 'model.skops')")
    if head != b"PK\x03\x04":
        raise ValueError(f"{path} is not a skops file (a zip archive written by skops.io.dump)")
    sio = _skops()
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise ValueError(f"{path} could not be read as a skops file: {exc}") from None
    refused = sorted(set(untrusted) - set(trusted) - SKLEARN_INTERNALS)
    if refused:
        raise ValueError(f"{path} holds types that are not trusted: {', '.join(refused)}. Read the file's "
                         "origin; if you trust them, pass trusted=[...] (CLI: --trust TYPE)")
    return sio.load(path, trusted=list(untrusted) or None)


def _skops() -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise ImportError("reading and writing estimators needs skops: pip install 'advlab[sklearn]' "
                          "(or pip install skops)") from None
    return sio


# -- a command's model: an estimator file ----------------------------------------------------------

@dataclass(frozen=True)
class SklearnModel:
    """A scikit-learn classifier saved with ``skops`` that a command runs on (``--sklearn FILE``).

    :meth:`load` reads the file (never with pickle; types skops does not trust are refused unless
    named in ``trusted``), checks the estimator is fitted, that its classes are ``0 .. K-1`` (the
    labels of advlab's datasets) and that it was fitted on as many features as the data has, and
    returns :func:`as_model` of it with a card whose architecture is ``sklearn:<ClassName>``.

    Attributes:
        path: the ``.skops`` file.
        trusted: types to trust beyond scikit-learn's own (``--trust TYPE``), after reading the file.
        dataset: the data the estimator is evaluated on (a ``--data`` name), for reports.
        svm_output: an SVC's logits: ``"decision_function"`` (exact) or ``"confidence"``.
    """

    path: str
    trusted: tuple[str, ...] = ()
    dataset: str | None = None
    svm_output: str = "decision_function"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "trusted", tuple(str(t) for t in self.trusted))

    @property
    def name(self) -> str:
        """How reports name the model: the file's stem."""
        return Path(self.path).stem

    def estimator(self) -> Any:
        """The fitted estimator in the file (checked by :func:`as_model`: fitted, classes ``0 .. K-1``)."""
        est = load_sklearn(self.path, trusted=self.trusted)
        if not hasattr(est, "predict"):
            raise ValueError(f"{self.path} holds a {type(est).__name__}, not a fitted classifier")
        _fitted(est)
        return est

    def load(self, *, device: torch.device | str = "cpu",
             input_shape: Sequence[int] | None = None) -> tuple[nn.Module, Any]:
        """The estimator as a model (eval mode, on ``device``) and its card; ``input_shape`` is
        one input's shape (the data's), which must hold ``n_features_in_`` features."""
        from advlab.models.checkpoint import ModelCard
        from advlab.models.user import resolve_device

        if input_shape is None:
            raise ValueError(f"--sklearn {self.path}: give the data (--data NAME); the input shape is the data's")
        est = self.estimator()
        shape = tuple(int(s) for s in input_shape)
        model = (from_sklearn(est, input_shape=shape, svm_output=self.svm_output) if is_differentiable(est)
                 else as_model(est, input_shape=shape))
        dev = resolve_device(device) if isinstance(device, str) else device
        if not is_differentiable(est) and dev.type != "cpu":
            raise ValueError(f"--sklearn {self.path}: a {type(est).__name__} answers on the CPU (scikit-learn); "
                             "run it with --device cpu")
        model = model.to(dev).eval()
        sha = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        card = ModelCard(architecture=f"sklearn:{type(est).__name__}",
                         in_shape=shape if len(shape) == 3 else (1, 1, int(np.prod(shape))),
                         num_classes=len(est.classes_), dataset=self.dataset,
                         training={"file": self.path, "sha256": sha, "differentiable": is_differentiable(est),
                                   "bounds": [0.0, 1.0]})
        return model, card
