"""The gallery for signals ``(B, C, T)``: original and adversarial curves per channel, with classes.

In place of an image gallery: one row of panels per point, one panel per channel, the clean
curve and the adversarial curve on the same axes (in the data's original units when a
:class:`~advlab.data.FeatureScaling` is given), and above each row the clean class and confidence,
then the adversarial ones (in red when the class changed). Every number shown is passed in.

>>> fig = signal_gallery_from_result(x, result, class_names=ds.class_names, clean_pred=p, clean_conf=c,
...                                  y=y, channel_names=ds.feature_names, scaling=ds.scaling,
...                                  path="signals.png")
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from advlab.reports._figure import new_figure, norm_symbol, save_png, to_numpy
from advlab.reports.gallery import CHANGED_COLOR, _measure, _name, _percent, showcase_order

CLEAN_COLOR = "#2c3e50"
ADV_COLOR = "#e67e22"
PANEL_WIDTH, ROW_HEIGHT = 2.6, 1.9
MAX_CHANNELS = 8


def signal_gallery(x: Any, x_adv: Any, *, class_names: Sequence[str] | None,
                   clean_pred: Any, clean_conf: Any, adv_pred: Any, adv_conf: Any,
                   true_labels: Any | None = None, norms: Any | None = None, norm: str = "linf",
                   channel_names: Sequence[str] | None = None, scaling: Any | None = None,
                   channels: Sequence[int] | None = None, n: int = 4, title: str | None = None,
                   path: str | os.PathLike[str] | None = None) -> Figure:
    """Draw the first ``n`` signals as rows of per-channel panels, clean and adversarial overlaid.

    Args:
        x, x_adv: ``(B, C, T)`` clean and adversarial signals (``(B, T)`` is one channel), values
            in ``[0, 1]`` when ``scaling`` is given; tensors or arrays.
        class_names: a name per class index; ``None`` writes ``class 3``.
        clean_pred, clean_conf, adv_pred, adv_conf: ``(B,)`` classes and softmax probabilities at
            ``x`` and at ``x_adv`` (``AttackResult.pred`` and ``.confidence``).
        true_labels: ``(B,)`` optional; written in each row's heading.
        norms: ``(B,)`` ``||x_adv - x||`` in ``norm``; measured with :func:`advlab.threat.lp_norm`
            when omitted.
        norm: the norm of ``norms``.
        channel_names: a name per channel (``Dataset.feature_names``); ``channel k`` otherwise.
        scaling: a :class:`~advlab.data.FeatureScaling` (``Dataset.scaling``): the curves are
            drawn in original units (``low + v * (high - low)`` per channel); else as given.
        channels: which channels to draw (default: all, at most 8).
        n: how many points (rows).
        title: optional figure title.
        path: write a PNG (120 dpi) there.

    Returns:
        The figure: ``n`` sub-figures (one per point, its heading as the sub-figure title), each
        with one axes per channel drawn.
    """
    xs, xa = _signals(to_numpy(x, name="x"), "x"), _signals(to_numpy(x_adv, name="x_adv"), "x_adv")
    if xs.shape != xa.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {xs.shape} and {xa.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n_channels, steps = xs.shape[1], xs.shape[2]
    if channels is None:
        if n_channels > MAX_CHANNELS:
            raise ValueError(f"{n_channels} channels are too many panels for one row; pick at most "
                             f"{MAX_CHANNELS} with channels=[...]")
        channels = list(range(n_channels))
    channels = [int(c) for c in channels]
    if not channels or any(not 0 <= c < n_channels for c in channels) or len(channels) > MAX_CHANNELS:
        raise ValueError(f"channels must be 1 to {MAX_CHANNELS} indices in [0, {n_channels - 1}], got {channels}")
    if channel_names is not None and len(channel_names) != n_channels:
        raise ValueError(f"channel_names has {len(channel_names)} names for {n_channels} channels")
    rows = min(n, xs.shape[0])
    vals = _per_point(rows, clean_pred=clean_pred, clean_conf=clean_conf, adv_pred=adv_pred, adv_conf=adv_conf,
                      true_labels=true_labels, norms=norms)
    if "norms" not in vals:
        vals["norms"] = _measure(xa[:rows] - xs[:rows], norm)
    units = "" if scaling is None else " (original units)"
    if scaling is not None:
        xs, xa = _to_original(xs, scaling), _to_original(xa, scaling)

    fig = new_figure((PANEL_WIDTH * len(channels), ROW_HEIGHT * rows + (0.4 if title else 0.0)))
    subfigs = np.atleast_1d(fig.subfigures(rows, 1, squeeze=False).ravel())
    t = np.arange(steps)
    for i, sub in enumerate(subfigs):
        c_pred, a_pred = int(vals["clean_pred"][i]), int(vals["adv_pred"][i])
        changed = c_pred != a_pred
        truth = f"true {_name(class_names, int(vals['true_labels'][i]))}: " if "true_labels" in vals else ""
        sub.suptitle(f"{truth}clean {_name(class_names, c_pred)} ({_percent(vals['clean_conf'][i])}) → "
                     f"adversarial {_name(class_names, a_pred)} ({_percent(vals['adv_conf'][i])}), "
                     f"{norm_symbol(norm)}={float(vals['norms'][i]):.3g}",
                     fontsize=9.5, color=CHANGED_COLOR if changed else "black",
                     fontweight="bold" if changed else "normal")
        axes = sub.subplots(1, len(channels), squeeze=False)[0]
        for ax, c in zip(axes, channels):
            ax.plot(t, xs[i, c], color=CLEAN_COLOR, linewidth=1.1, label="clean")
            ax.plot(t, xa[i, c], color=ADV_COLOR, linewidth=1.0, linestyle="--", label="adversarial")
            ax.set_title(channel_names[c] if channel_names is not None else f"channel {c}", fontsize=8.5)
            ax.tick_params(labelsize=7)
            ax.margins(x=0)
        if i == rows - 1:
            for ax in axes:
                ax.set_xlabel("time step", fontsize=8)
        axes[0].set_ylabel(f"value{units}" if i == 0 else "", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", ncols=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    save_png(fig, path)
    return fig


def signal_gallery_from_result(x: Any, result: Any, *, class_names: Sequence[str] | None,
                               clean_pred: Any, clean_conf: Any, y: Any | None = None, n: int = 4,
                               channel_names: Sequence[str] | None = None, scaling: Any | None = None,
                               channels: Sequence[int] | None = None, title: str | None = None,
                               path: str | os.PathLike[str] | None = None) -> Figure:
    """:func:`signal_gallery` for an :class:`~advlab.attacks.AttackResult`, the attack's real
    successes first (the order of :func:`~advlab.reports.gallery_from_result`). Norms, the norm and
    the default title (``"<Attack> (norm, ε=...)"``) come from ``result``."""
    order = showcase_order(result, clean_pred, y, n)

    def pick(v: Any, name: str) -> np.ndarray | None:
        return None if v is None else to_numpy(v, name=name)[order]

    threat = result.threat
    if title is None:
        title = f"{str(result.attack).split('(')[0]} ({threat.norm}, ε={threat.eps:g})"
    return signal_gallery(pick(x, "x"), pick(result.x_adv, "result.x_adv"), class_names=class_names,
                          clean_pred=pick(clean_pred, "clean_pred"), clean_conf=pick(clean_conf, "clean_conf"),
                          adv_pred=pick(result.pred, "result.pred"),
                          adv_conf=pick(result.confidence, "result.confidence"), true_labels=pick(y, "y"),
                          norms=pick(result.norms, "result.norms"), norm=threat.norm,
                          channel_names=channel_names, scaling=scaling, channels=channels, n=n, title=title,
                          path=path)


def _signals(a: np.ndarray, name: str) -> np.ndarray:
    """``(B, C, T)`` float array; ``(B, T)`` gets a channel axis."""
    if a.ndim == 2:
        a = a[:, None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be signals (B, C, T) (or (B, T)), got shape {a.shape}; "
                         "for images use gallery, for tables changed_features_table")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return a.astype(np.float64)


def _to_original(a: np.ndarray, scaling: Any) -> np.ndarray:
    """Per index of axis 1: ``low + a * (high - low)`` from a FeatureScaling's ranges."""
    low, high = np.asarray(scaling.low, dtype=np.float64), np.asarray(scaling.high, dtype=np.float64)
    if low.shape != (a.shape[1],):
        raise ValueError(f"scaling has {low.size} ranges but the data has {a.shape[1]} along axis 1")
    shape = (1, a.shape[1], *([1] * (a.ndim - 2)))
    return low.reshape(shape) + a * (high - low).reshape(shape)


def _per_point(rows: int, **per_point: Any) -> dict[str, np.ndarray]:
    """The first ``rows`` entries of each given ``(B,)`` array (``None`` ones are left out)."""
    vals = {}
    for key, v in per_point.items():
        if v is None:
            continue
        arr = to_numpy(v, name=key).reshape(-1)
        if arr.shape[0] < rows:
            raise ValueError(f"{key} has {arr.shape[0]} entries, need at least {rows}")
        if not all(math.isfinite(float(e)) for e in arr[:rows]):
            raise ValueError(f"{key} holds NaN or infinite values among the first {rows}")
        vals[key] = arr[:rows]
    return vals
