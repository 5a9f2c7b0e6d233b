"""The decision-tree attack: move an input to the nearest leaf of another class.

Papernot, McDaniel & Goodfellow (2016), "Transferability in machine learning: from phenomena to
black-box attacks using adversarial samples", Sec. 3.2: a decision tree is attacked white-box by
following its structure, changing the features on the path so that the input lands in a leaf of
another class, with as little change as possible. Their search walks up from the input's leaf to
the nearest ancestor with a differently labelled leaf below it; this module solves the same
problem *exactly*:

A leaf of a tree is an axis-aligned box ``R_l = {x : a_l <= x <= b_l}`` (the thresholds on its
path: ``x_f <= t`` to the left, ``x_f > t`` to the right), and every input in it is classified as
the leaf's class. The nearest point of a box under *any* Lp norm is the coordinate-wise clip,
``Π_l(x) = clip(x, a_l, b_l)``, so the minimal adversarial example of a tree is

    x' = Π_{l*}(x),   l* = argmin_{l : class(l) != y, R_l ∩ [lo, hi]^d ≠ ∅} ||Π_l(x) − x||_p

over the leaves of another class (of the target class when targeted), each box intersected with
the input box (Kantchelian, Tygar & Joseph 2016 note the single-tree case is this easy; for
forests it is NP-hard: use a decision-based attack through the oracle). The result is exact in
the float32 arithmetic scikit-learn's trees compare in (``X`` is cast to float32, and a right
branch needs ``x > t``: its bound is the next float32 above ``t``), plus an optional ``margin``
past each threshold that makes the example survive rounding or a slightly different tree.

Example:
    >>> model = advlab.models.as_model(DecisionTreeClassifier().fit(X, y), input_shape=(1, 8, 8))
    >>> result = TreeAttack(norm="l2")(model, x, y)     # result.norms: the exact minimal L2 change
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from advlab._checks import bounds_field, check_number, norm_field
from advlab.attacks.contract import Attack, Run
from advlab.threat import lp_norm

__all__ = ["TreeAttack", "leaf_boxes"]


def leaf_boxes(tree: Any, *, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leaves of a fitted scikit-learn tree as float32 boxes.

    Returns ``(low, high, label)``: ``(L, D)`` float32 bounds, closed (``low <= x <= high`` in
    float32 reaches the leaf) and ``(L,)`` the leaf's class (argmax of its class counts). A left
    branch ``x_f <= t`` bounds ``x_f`` by the largest float32 ``<= t - margin``; a right branch
    ``x_f > t`` by the smallest float32 ``> t`` and ``>= t + margin``.
    """
    t_ = tree.tree_
    d = int(t_.n_features)
    left, right, feat, thr = t_.children_left, t_.children_right, t_.feature, t_.threshold
    value = t_.value[:, 0, :] if t_.value.ndim == 3 else t_.value
    lows, highs, labels = [], [], []
    stack = [(0, np.full(d, -np.inf, np.float32), np.full(d, np.inf, np.float32))]
    while stack:
        node, lo, hi = stack.pop()
        if left[node] == -1:  # a leaf
            lows.append(lo)
            highs.append(hi)
            labels.append(int(np.argmax(value[node])))
            continue
        f, t = int(feat[node]), float(thr[node])
        # left: x <= t - margin, as a float32 bound rounded down
        b = np.float32(t - margin)
        if float(b) > t - margin:
            b = np.nextafter(b, np.float32(-np.inf))
        # right: x > t and x >= t + margin, as a float32 bound rounded up
        a = np.float32(t + margin)
        if float(a) <= t or float(a) < t + margin:
            a = np.nextafter(a, np.float32(np.inf))
        lo_l, hi_l = lo.copy(), hi.copy()
        hi_l[f] = min(hi_l[f], b)
        lo_r, hi_r = lo.copy(), hi.copy()
        lo_r[f] = max(lo_r[f], a)
        stack.append((int(right[node]), lo_r, hi_r))
        stack.append((int(left[node]), lo_l, hi_l))
    return np.stack(lows), np.stack(highs), np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class TreeAttack(Attack):
    """The decision-tree attack (Papernot, McDaniel & Goodfellow 2016), solved exactly.

    Norm L∞, L2 or L1 (the nearest point of an axis-aligned leaf box is its clip under every Lp
    norm, so only the choice of leaf depends on the norm). Update rule (one shot, no iterations):
    ``x' = clip(x, a_{l*}, b_{l*})`` for the leaf ``l*`` of another class (the target class,
    when targeted) whose box, intersected with ``bounds``, is nearest to ``x``. Points with no
    such leaf in the box come back unchanged and unsuccessful.

    The model is a fitted ``DecisionTreeClassifier`` / ``ExtraTreeClassifier`` wrapped by
    :func:`advlab.models.as_model` (an :class:`~advlab.models.sklearn.EstimatorModule`); the
    attack reads the tree, which makes it white-box. Inputs ``(B, *)`` are flattened as the tree
    was fitted. Cost: one pass over ``B × leaves × features`` numbers, no gradients.

    Example:
        >>> result = TreeAttack(norm="linf")(as_model(tree, input_shape=(64,)), x, y)
        >>> result.norms.median()
    """

    kind: ClassVar[str] = "minimal"
    display_name: ClassVar[str | None] = "Tree attack"
    #: reads the model's structure (a tree), not its gradients
    structural: ClassVar[bool] = True
    norm: str = "l2"
    margin: float = 0.0
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        norm_field(self, ("linf", "l2", "l1"))
        check_number("margin", self.margin, low_open=False)
        bounds_field(self)

    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        est = getattr(model, "estimator", None)
        if est is None or not hasattr(est, "tree_"):
            got = type(est).__name__ if est is not None else type(model).__name__
            hint = (" (a forest: attack it with HopSkipJump or BoundaryAttack through an Oracle, or "
                    "attack one of its trees and transfer)" if hasattr(est, "estimators_") else "")
            raise TypeError(f"TreeAttack attacks a decision tree wrapped by advlab.models.as_model(tree, "
                            f"input_shape=...); got {got}{hint}")

    def _core(self, run: Run) -> None:
        est = run.model.estimator
        low, high, label = leaf_boxes(est, margin=self.margin)
        x, idx = run.x, run.todo
        lo, hi = run.threat.box(x)
        if isinstance(lo, Tensor):  # per-feature bounds: one interval per feature of the flat input
            lo = lo.reshape(-1).cpu().numpy().astype(np.float32)
            hi = hi.reshape(-1).cpu().numpy().astype(np.float32)
        low, high = np.maximum(low, np.float32(lo) if np.isscalar(lo) else lo), \
            np.minimum(high, np.float32(hi) if np.isscalar(hi) else hi)
        open_ = (low <= high).all(axis=1)  # the leaf meets the input box
        dev, dt = x.device, x.dtype
        low_t = torch.as_tensor(low[open_], device=dev).to(dt)
        high_t = torch.as_tensor(high[open_], device=dev).to(dt)
        lab_t = torch.as_tensor(label[open_], device=dev)
        xs = x[idx].reshape(idx.numel(), -1)  # (B', D)
        aim = run.target[idx] if run.target is not None else None
        out = xs.clone()
        n_leaves, d = low_t.shape
        free = run.threat.free(x)
        free = free.reshape(1, 1, -1) if free is not None else None
        chunk = max(1, int(2e7 // max(1, n_leaves * d)))
        for s in range(0, xs.shape[0], chunk):
            xb = xs[s:s + chunk]  # (b, D)
            proj = torch.maximum(torch.minimum(xb[:, None, :], high_t[None]), low_t[None])  # (b, L, D)
            dist = lp_norm((proj - xb[:, None, :]).reshape(-1, d), self.norm).view(xb.shape[0], n_leaves)
            if free is not None:  # a frozen feature must already lie in the leaf's interval
                moved = (proj != xb[:, None, :]) & ~free
                dist = dist.masked_fill(moved.any(dim=2), math.inf)
            if aim is not None:
                bad = lab_t[None, :] != aim[s:s + chunk, None]
            else:
                bad = lab_t[None, :] == run.y[idx][s:s + chunk, None]
            dist = dist.masked_fill(bad, math.inf)
            best = dist.argmin(dim=1)
            found = torch.isfinite(dist.gather(1, best[:, None]).squeeze(1))
            pick = proj[torch.arange(xb.shape[0], device=dev), best]
            out[s:s + chunk] = torch.where(found[:, None], pick, xb)
        run.record.record(idx, out.view_as(x[idx]), None, torch.zeros_like(idx, dtype=torch.bool))
