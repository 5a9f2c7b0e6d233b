"""scikit-learn classifiers in advlab: as exact torch modules (white-box) or as query callables.

Two ways in, depending on what the estimator is and what the threat model allows:

* :func:`from_sklearn` converts a fitted *differentiable* estimator into an ``nn.Module`` that
  returns logits equal (to float precision) to the estimator's: ``LogisticRegression`` (binary and
  multinomial), linear SVMs and ``SGDClassifier`` (``decision_function`` as logits), and
  ``MLPClassifier`` (its layers and activation). Every white-box attack then applies, and
  :func:`advlab.evaluation.transfer_matrix` can mix learning techniques (Papernot et al. 2016).
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

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SklearnScores", "from_sklearn"]


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


def from_sklearn(estimator: Any, *, input_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> nn.Module:
    """An ``nn.Module`` (eval mode) whose logits reproduce a fitted scikit-learn classifier.

    Supported: ``LogisticRegression``, ``LinearSVC``, ``SGDClassifier``, ``RidgeClassifier`` and
    any linear model with ``coef_``/``intercept_`` (logits = ``decision_function``; for
    ``LogisticRegression`` ``softmax(logits)`` equals ``predict_proba``), and ``MLPClassifier``
    (layers, activation; softmax or logistic output). A binary linear model gets two logits
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
        raise TypeError(f"{name} is not differentiable (no coef_ or coefs_); wrap it with "
                        "SklearnScores and attack it through an Oracle with a black-box attack")
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
