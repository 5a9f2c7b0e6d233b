"""The adversarial-example gallery: original, amplified perturbation, adversarial, one row per point.

The layout of Goodfellow, Shlens & Szegedy (2015), "Explaining and harnessing adversarial
examples", Figure 1 (the panda), as rows. Every number shown (predicted classes, confidences,
perturbation norms) is passed in; this module only draws. The one exception is the perturbation
norm when the caller does not pass ``norms``: it is then measured with
:func:`advlab.threat.lp_norm`, the library's only norm implementation.

>>> fig = gallery_from_result(x, result, class_names=names, clean_pred=p, clean_conf=c,
...                           y=y, n=4, path="gallery.png")
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from advlab.reports._figure import new_figure, norm_symbol, save_png, to_numpy

CHANGED_COLOR = "#c0392b"  # red title: the adversarial class differs from the clean one
PANEL_INCHES = 2.2


def gallery(x: Any, x_adv: Any, *, class_names: Sequence[str] | None,
            clean_pred: Any, clean_conf: Any, adv_pred: Any, adv_conf: Any,
            true_labels: Any | None = None, norms: Any | None = None, norm: str = "linf",
            bounds: tuple[float, float] = (0.0, 1.0), n: int = 6,
            amplify: str | float = "auto", title: str | None = None,
            path: str | os.PathLike[str] | None = None) -> Figure:
    """Draw the first ``n`` points as rows of (original, perturbation, adversarial) panels.

    Args:
        x, x_adv: ``(B, C, H, W)`` (or ``(B, H, W)``) clean and adversarial inputs, ``C`` 1 or 3,
            values in ``bounds``; tensors or arrays.
        class_names: a name per class index; ``None`` writes ``class 3``.
        clean_pred, clean_conf: ``(B,)`` class and its softmax probability at ``x``.
        adv_pred, adv_conf: ``(B,)`` class and its softmax probability at ``x_adv``
            (``AttackResult.pred`` and ``.confidence``).
        true_labels: ``(B,)`` optional; written under the original image.
        norms: ``(B,)`` ``||x_adv - x||`` in ``norm`` (``AttackResult.norms``); measured with
            :func:`advlab.threat.lp_norm` when omitted.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``, the norm of ``norms``.
        bounds: ``(lo, hi)`` of the input box; fixes the gray scale (no per-image rescaling).
        n: how many points (rows) to show, at most ``B``.
        amplify: factor applied to ``x_adv - x`` before it is drawn around mid-gray. ``"auto"``
            picks, per row, the largest two-significant-digit factor that keeps the perturbation
            inside the box, so it spans the full gray range; the factor is written on the panel.
        title: optional figure title.
        path: write a PNG (120 dpi) there.

    Returns:
        The figure, ``3 * n`` axes in row order.
    """
    xs = _images(to_numpy(x, name="x"), "x")
    xa = _images(to_numpy(x_adv, name="x_adv"), "x_adv")
    if xs.shape != xa.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {xs.shape} and {xa.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    if not (amplify == "auto" or (isinstance(amplify, (int, float)) and not isinstance(amplify, bool)
                                  and math.isfinite(amplify) and amplify > 0)):
        raise ValueError(f"amplify must be 'auto' or a positive number, got {amplify!r}")
    rows = min(n, xs.shape[0])
    per_point = {"clean_pred": clean_pred, "clean_conf": clean_conf, "adv_pred": adv_pred,
                 "adv_conf": adv_conf}
    if true_labels is not None:
        per_point["true_labels"] = true_labels
    if norms is not None:
        per_point["norms"] = norms
    vals = {}
    for key, v in per_point.items():
        arr = to_numpy(v, name=key).reshape(-1)
        if arr.shape[0] < rows:
            raise ValueError(f"{key} has {arr.shape[0]} entries, need at least {rows}")
        vals[key] = arr[:rows]
    deltas = xa[:rows] - xs[:rows]
    if "norms" not in vals:
        vals["norms"] = _measure(deltas, norm)

    fig = new_figure((3 * PANEL_INCHES, PANEL_INCHES * rows + (0.35 if title else 0.0)))
    axes = fig.subplots(rows, 3, squeeze=False)
    mid = (lo + hi) / 2
    for i in range(rows):
        ax_x, ax_d, ax_a = axes[i]
        c_pred, a_pred = int(vals["clean_pred"][i]), int(vals["adv_pred"][i])
        _show(ax_x, xs[i], lo, hi)
        head = ("clean\n", "adversarial\n") if i == 0 else ("", "")  # column headers on the top row
        ax_x.set_title(f"{head[0]}{_name(class_names, c_pred)} ({_percent(vals['clean_conf'][i])})", fontsize=10)
        if "true_labels" in vals:
            ax_x.set_ylabel(f"true: {_name(class_names, int(vals['true_labels'][i]))}", fontsize=9)

        delta = deltas[i]
        factor = _auto_factor(delta, (hi - lo) / 2) if amplify == "auto" else float(amplify)
        _show(ax_d, np.clip(mid + factor * delta, lo, hi), lo, hi)
        ax_d.set_title(f"perturbation ×{factor:g}\n{norm_symbol(norm)}={float(vals['norms'][i]):.3g}",
                       fontsize=9)

        _show(ax_a, xa[i], lo, hi)
        changed = a_pred != c_pred
        ax_a.set_title(f"{head[1]}{_name(class_names, a_pred)} ({_percent(vals['adv_conf'][i])})", fontsize=10,
                       color=CHANGED_COLOR if changed else "black",
                       fontweight="bold" if changed else "normal")
    if title:
        fig.suptitle(title, fontsize=11)
    save_png(fig, path)
    return fig


def gallery_from_result(x: Any, result: Any, *, class_names: Sequence[str] | None,
                        clean_pred: Any, clean_conf: Any, y: Any | None = None, n: int = 6,
                        amplify: str | float = "auto", title: str | None = None,
                        path: str | os.PathLike[str] | None = None) -> Figure:
    """:func:`gallery` for an :class:`~advlab.attacks.AttackResult`, the attack's real successes
    first: points classified correctly and then fooled, then those it could not fool, then those
    the model got wrong before any attack (an attack "succeeds" on them at no cost). Correct means
    ``clean_pred == y`` (without ``y``: the attack moved the prediction off ``clean_pred``).

    Points keep their batch order within each group. Norms, the norm, the bounds and the default
    title come from ``result``.

    Args:
        x: ``(B, C, H, W)`` the clean inputs the attack was run on.
        result: the attack's result on ``x``.
        class_names, clean_pred, clean_conf: as for :func:`gallery` (``(B,)`` each).
        y: ``(B,)`` true labels, optional.
        n, amplify, path: as for :func:`gallery`.
        title: defaults to ``"<Attack> (norm, ε=...)"``.
    """
    order = showcase_order(result, clean_pred, y, n)

    def pick(v: Any, name: str) -> np.ndarray | None:
        return None if v is None else to_numpy(v, name=name)[order]

    threat = result.threat
    if title is None:
        title = f"{str(result.attack).split('(')[0]} ({threat.norm}, ε={threat.eps:g})"
    return gallery(pick(x, "x"), pick(result.x_adv, "result.x_adv"), class_names=class_names,
                   clean_pred=pick(clean_pred, "clean_pred"), clean_conf=pick(clean_conf, "clean_conf"),
                   adv_pred=pick(result.pred, "result.pred"),
                   adv_conf=pick(result.confidence, "result.confidence"),
                   true_labels=pick(y, "y"), norms=pick(result.norms, "result.norms"),
                   norm=threat.norm, bounds=threat.bounds, n=n, amplify=amplify, title=title, path=path)


def showcase_order(result: Any, clean_pred: Any, y: Any | None, n: int) -> np.ndarray:
    """Indices of the first ``n`` points to show for ``result``: the attack's real successes
    (correct, then fooled), then the points it could not fool, then those wrong before any attack;
    batch order within each group. Correct means ``clean_pred == y`` (without ``y``: the attack
    moved the prediction off ``clean_pred``)."""
    success = to_numpy(result.success, name="result.success").reshape(-1).astype(bool)
    clean = to_numpy(clean_pred, name="clean_pred").reshape(-1)
    if y is not None:
        attacked = clean == to_numpy(y, name="y").reshape(-1)
    else:
        attacked = to_numpy(result.pred, name="result.pred").reshape(-1) != clean
        attacked |= ~success  # (a point the attack did not move was already wrong)
    rank = np.where(attacked & success, 0, np.where(attacked, 1, 2))
    return np.argsort(rank, kind="stable")[:n]


def _images(a: np.ndarray, name: str) -> np.ndarray:
    """``(B, C, H, W)`` float array with ``C`` in {1, 3}; ``(B, H, W)`` gets a channel axis."""
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be (B, C, H, W) with C = 1 or 3 (or (B, H, W)), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return a.astype(np.float64)


def _show(ax: Any, img: np.ndarray, lo: float, hi: float) -> None:
    """Draw ``img`` ``(C, H, W)`` on the fixed scale ``[lo, hi]``, without ticks."""
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    else:
        ax.imshow(np.clip((img.transpose(1, 2, 0) - lo) / (hi - lo), 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _auto_factor(delta: np.ndarray, half_range: float) -> float:
    """Largest two-significant-digit factor with ``factor * max|delta| <= half_range`` (to 1e-4)."""
    peak = float(np.abs(delta).max())
    if peak == 0.0 or not math.isfinite(peak):
        return 1.0
    raw = half_range / peak
    scale = 10.0 ** (math.floor(math.log10(raw)) - 1)
    # float32 round-off puts max|δ| a hair above a radius such as 0.1; read ×4.99996 as ×5.
    return float(f"{math.floor(raw / scale * (1 + 1e-4)) * scale:.2g}")


def _measure(deltas: np.ndarray, norm: str) -> np.ndarray:
    import torch

    from advlab.threat import canonical_norm, lp_norm

    return lp_norm(torch.from_numpy(deltas), canonical_norm(norm)).numpy()


def _name(class_names: Sequence[str] | None, k: int) -> str:
    if class_names is None:
        return f"class {k}"
    if not 0 <= k < len(class_names):
        raise ValueError(f"class index {k} is outside class_names (length {len(class_names)})")
    return str(class_names[k])


def _percent(p: float) -> str:
    return f"{100 * float(p):.1f}%"
