"""Figures for the geometry results of :mod:`advlab.evaluation.geometry`.

* :func:`decision_map_figure` / :func:`decision_maps_figure`: the decision-boundary cross-sections
  of CS231n lecture 16 (after Warde-Farley & Goodfellow 2016): each cell coloured by the predicted
  class, the true class in white as in the lecture's figure, the clean input marked at the origin,
  the FGSM direction horizontal and the random orthogonal direction vertical.
* :func:`cosine_figure`: the cosine similarity of successive updates of I-FGSM and MI-FGSM per
  step (Dong et al. 2018).
* :func:`subspace_dim_figure`: the distribution of GAAS dimension estimates (Tramèr et al. 2017).

Rendering only: every value drawn is a stored field of the result (or, for the cosine curves and
the histogram, the result's own ``per_step`` / ``quantiles`` / ``distribution`` methods).

>>> decision_maps_figure(maps, class_names=names, path="decision_maps.png")
>>> cosine_figure(cos, path="cosine.png")
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from advlab.reports._figure import new_figure, save_png, to_numpy

TRUE_COLOR = "#ffffff"  # the lecture's convention: white where the class is the correct one
ORIGIN_LABEL = "clean input"
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_AXIS = {"fgsm": {"linf": "ε along FGSM direction", "l2": "ε along FGM (L2) direction"},
         "given": {"linf": "ε along the given direction", "l2": "ε along the given direction"}}
_OTHER = {"random": "ε along random orthogonal direction", "given": "ε along the given orthogonal direction"}


def class_colors(num_classes: int) -> list[tuple[float, float, float, float]]:
    """One fixed colour per class index (tab10, tab20, then evenly spaced hues), the same in
    every map so that a class reads the same across a grid of maps."""
    from matplotlib import colormaps

    if num_classes <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(num_classes)]
    if num_classes <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(num_classes)]
    cmap = colormaps["hsv"]
    return [cmap(i / num_classes) for i in range(num_classes)]


def _name(class_names: Sequence[str] | None, c: int) -> str:
    if class_names is not None and 0 <= c < len(class_names):
        return str(class_names[c])
    return f"class {c}"


def _palette(dmap: Any, highlight_true: bool) -> list[tuple[float, float, float, float]]:
    colors = class_colors(dmap.num_classes)
    if highlight_true:
        colors[dmap.true_class] = to_rgba(TRUE_COLOR)
    return colors


def _draw(ax: Any, dmap: Any, *, highlight_true: bool, labels: bool) -> None:
    classes = to_numpy(dmap.classes, name="classes")
    coords = to_numpy(dmap.coords, name="coords").astype(float)
    if classes.ndim != 2 or classes.shape != (coords.shape[0], coords.shape[0]):
        raise ValueError(f"the class map must be (R, R) with R = len(coords), got {classes.shape}")
    c = dmap.num_classes
    half = (coords[1] - coords[0]) / 2 if coords.shape[0] > 1 else 0.5
    extent = (coords[0] - half, coords[-1] + half, coords[0] - half, coords[-1] + half)
    ax.imshow(classes, origin="lower", extent=extent, interpolation="nearest", aspect="equal",
              cmap=ListedColormap(_palette(dmap, highlight_true)),
              norm=BoundaryNorm(np.arange(c + 1) - 0.5, c))
    # the true class in white needs an outline to be seen against the white page: the cell edges
    # between a true-class cell and any other
    if highlight_true:
        ax.add_collection(LineCollection(_region_edges(classes == dmap.true_class, coords, half),
                                         colors="#555555", linewidths=0.6, label="_true_edge"))
    ax.axhline(0.0, color="#888888", linewidth=0.5, linestyle=":")
    ax.axvline(0.0, color="#888888", linewidth=0.5, linestyle=":")
    ax.plot([0.0], [0.0], marker="*", markersize=11, color="black", markeredgecolor="white",
            linestyle="none", label=ORIGIN_LABEL, zorder=5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    if labels:
        ax.set_xlabel(_AXIS.get(dmap.direction, _AXIS["given"]).get(dmap.norm, "ε along u"))
        ax.set_ylabel(_OTHER.get(dmap.other, "ε along v"))


def _region_edges(inside: np.ndarray, coords: np.ndarray, half: float) -> list[list[tuple[float, float]]]:
    """Segments along the cell borders between ``inside`` cells and the others ((R, R) bool;
    rows are the y axis)."""
    segs: list[list[tuple[float, float]]] = []
    rows, cols = np.nonzero(inside[:, 1:] != inside[:, :-1])     # between columns j and j + 1
    for i, j in zip(rows, cols):
        x = coords[j] + half
        segs.append([(x, coords[i] - half), (x, coords[i] + half)])
    rows, cols = np.nonzero(inside[1:, :] != inside[:-1, :])     # between rows i and i + 1
    for i, j in zip(rows, cols):
        y = coords[i] + half
        segs.append([(coords[j] - half, y), (coords[j] + half, y)])
    return segs


def _legend_handles(maps: Sequence[Any], class_names: Sequence[str] | None,
                    highlight_true: bool) -> list[Any]:
    # the classes drawn in colour somewhere (with highlight_true a map's own true class is white)
    present: set[int] = set()
    trues = {int(m.true_class) for m in maps}
    for m in maps:
        drawn = {int(v) for v in np.unique(to_numpy(m.classes, name="classes"))}
        present.update(drawn - {int(m.true_class)} if highlight_true else drawn)
    colors = class_colors(maps[0].num_classes)
    handles: list[Any] = []
    if highlight_true:
        label = "true class" if len(trues) > 1 else f"{_name(class_names, next(iter(trues)))} (true)"
        handles.append(Patch(facecolor=TRUE_COLOR, edgecolor="#555555", label=label))
    for cls in sorted(present):
        suffix = " (true)" if cls in trues and not highlight_true and len(trues) == 1 else ""
        handles.append(Patch(facecolor=colors[cls], edgecolor="none", label=_name(class_names, cls) + suffix))
    handles.append(Line2D([], [], marker="*", markersize=11, color="black", markeredgecolor="white",
                          linestyle="none", label=ORIGIN_LABEL))
    return handles


def _title(dmap: Any, class_names: Sequence[str] | None) -> str:
    true = _name(class_names, dmap.true_class)
    if dmap.clean_class == dmap.true_class:
        return f"{true} ({100 * dmap.clean_confidence:.0f}%)"
    return f"{true}, predicted {_name(class_names, dmap.clean_class)} ({100 * dmap.clean_confidence:.0f}%)"


def decision_map_figure(dmap: Any, *, class_names: Sequence[str] | None = None,
                        highlight_true: bool = True, title: str | None = None,
                        path: str | os.PathLike[str] | None = None) -> Figure:
    """Draw one :class:`~advlab.evaluation.geometry.DecisionMap`: cells coloured by class.

    Horizontal: the FGSM direction ``u``; vertical: the random direction ``v ⟂ u`` (same L2
    norm); the star at the origin is the clean input. Each class has a fixed colour (tab10 for 10
    classes); with ``highlight_true`` the true class is white with a grey outline, as in the
    lecture's figure, so every coloured cell is a misclassification. The legend lists the classes
    present in the map by name.

    Args:
        dmap: the map.
        class_names: a name per class index; ``None`` writes ``class 3``.
        highlight_true: draw the true class white.
        title: defaults to the true class and the clean prediction with its confidence.
        path: write a PNG (120 dpi) there.

    Returns:
        The figure; its one axes holds the class map as an image (``get_array()`` is
        ``dmap.classes``), and the legend the class names.
    """
    fig = new_figure((6.6, 4.8))
    ax = fig.add_subplot()
    _draw(ax, dmap, highlight_true=highlight_true, labels=True)
    ax.legend(handles=_legend_handles([dmap], class_names, highlight_true), loc="upper left",
              bbox_to_anchor=(1.02, 1.0), fontsize=9, framealpha=0.9, borderaxespad=0.0)
    clip = "" if dmap.bounds is None else f"; points clipped to [{dmap.bounds[0]:g}, {dmap.bounds[1]:g}]"
    ax.set_title(f"{'FGSM' if dmap.direction == 'fgsm' else 'given'} × "
                 f"{'random' if dmap.other == 'random' else 'given'} cross-section "
                 f"({dmap.resolution}×{dmap.resolution}{clip})", fontsize=9, color="#444444")
    fig.suptitle(title if title is not None else _title(dmap, class_names), fontsize=12)
    save_png(fig, path)
    return fig


def decision_maps_figure(dmaps: Sequence[Any], *, class_names: Sequence[str] | None = None,
                         ncols: int = 3, highlight_true: bool = True, title: str | None = None,
                         path: str | os.PathLike[str] | None = None) -> Figure:
    """A grid of decision maps (one per input), like the lecture's grid of CIFAR-10 cells.

    Each panel is titled with the true class (and the clean prediction when it differs); axis
    labels are written once, on the outer panels; one legend lists every class present in any
    map. With ``highlight_true`` each map's own true class is white.

    Returns:
        The figure; ``fig.axes[:len(dmaps)]`` are the maps in order.
    """
    dmaps = list(dmaps)
    if not dmaps:
        raise ValueError("decision_maps_figure needs at least one map")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    if len({m.num_classes for m in dmaps}) != 1:
        raise ValueError("all maps must come from models with the same number of classes")
    ncols = min(ncols, len(dmaps))
    nrows = math.ceil(len(dmaps) / ncols)
    fig = new_figure((2.9 * ncols + 2.2, 2.9 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(dmaps):
            ax.set_visible(False)
            continue
        _draw(ax, dmaps[k], highlight_true=highlight_true, labels=False)
        ax.set_title(_title(dmaps[k], class_names), fontsize=9)
        ax.tick_params(labelsize=7)
        row, col = divmod(k, ncols)
        if row == nrows - 1 or k + ncols >= len(dmaps):
            ax.set_xlabel(_AXIS.get(dmaps[k].direction, _AXIS["given"]).get(dmaps[k].norm, "ε along u"),
                          fontsize=8)
        if col == 0:
            ax.set_ylabel(_OTHER.get(dmaps[k].other, "ε along v"), fontsize=8)
    fig.legend(handles=_legend_handles(dmaps, class_names, highlight_true), loc="outside right upper",
               fontsize=8, framealpha=0.9)
    fig.suptitle(title if title is not None else "Decision maps: FGSM direction × random orthogonal "
                 "direction", fontsize=12)
    save_png(fig, path)
    return fig


def cosine_figure(result: Any, *, of: str = "update", band: tuple[float, float] | None = (0.25, 0.75),
                  title: str | None = None, path: str | os.PathLike[str] | None = None) -> Figure:
    """The mean cosine similarity of successive updates against the step, one line per attack.

    Point ``t`` (from 1) is ``cos(x_t - x_{t-1}, x_{t+1} - x_t)`` averaged over the attacked points
    (``result.per_step``), with the ``band`` quantiles over points shaded; the legend gives each
    attack's mean over steps. ``of="direction"`` draws the raw step directions instead.

    Returns:
        The figure; one line per attack labelled ``"<name> (mean 0.xxx)"``.
    """
    names = list(result.names)
    if not names:
        raise ValueError("the result has no attacks to plot")
    fig = new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    lowest = 0.0
    for k, name in enumerate(names):
        ys = to_numpy(result.per_step(name, of=of), name="per_step").astype(float)
        ts = np.arange(1, ys.shape[0] + 1)
        line, = ax.plot(ts, ys, marker=MARKERS[k % len(MARKERS)], linewidth=1.6, markersize=5,
                        label=f"{name} (mean {result.mean(name, of=of):.3f})")
        if band is not None and ys.size:
            q = to_numpy(result.quantiles(name, band, of=of), name="quantiles").astype(float)
            ax.fill_between(ts, q[0], q[1], color=line.get_color(), alpha=0.15, linewidth=0)
            lowest = min(lowest, float(np.nanmin(q[0])))
        if ys.size:
            lowest = min(lowest, float(np.nanmin(ys)))
    ax.set_ylim(lowest - 0.05 if lowest < 0 else 0.0, 1.02)
    ax.set_xlabel("step t")
    what = "updates $x_{t+1}-x_t$" if of == "update" else "step directions"
    ax.set_ylabel(r"cos(successive " + ("updates)" if of == "update" else "directions)"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower left", framealpha=0.9)
    band_text = f"; band: {int(100 * band[0])}–{int(100 * band[1])}% of points" if band else ""
    ax.set_title(f"cosine of successive {what}, mean over n = {result.n_used} points{band_text}",
                 fontsize=9, color="#444444")
    fig.suptitle(title if title is not None else "Successive-update cosine similarity", fontsize=12)
    save_png(fig, path)
    return fig


def subspace_dim_figure(results: Any | Sequence[Any], *, title: str | None = None,
                        path: str | os.PathLike[str] | None = None) -> Figure:
    """Bar chart of GAAS dimension estimates: for each ``k`` (and 0), the share of measured points
    whose estimate is ``k``; one group of bars per result (e.g. per ε).

    Returns:
        The figure; bars labelled ``ε = <eps>`` with heights ``distribution()[k] / n_measured``.
    """
    results = [results] if hasattr(results, "distribution") else list(results)
    if not results:
        raise ValueError("subspace_dim_figure needs at least one result")
    keys = sorted({k for r in results for k in r.distribution()})
    fig = new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    pos = np.arange(len(keys))
    for j, r in enumerate(results):
        dist = r.distribution()
        total = sum(dist.values())
        heights = [dist.get(k, 0) / total if total else 0.0 for k in keys]
        ax.bar(pos + (j - (len(results) - 1) / 2) * width, heights, width=width,
               label=f"ε = {r.eps:g} (n = {total}, mean {r.summary()['mean_dim']:.1f})")
    ax.set_xticks(pos, [str(k) for k in keys])
    ax.set_xlabel("estimated dimension k (largest k with all k GAAS directions adversarial)"
                  if all(r.fraction == 1 for r in results) else "estimated dimension k")
    ax.set_ylabel("share of points")
    tallest = max((p.get_height() for p in ax.patches), default=0.0)
    ax.set_ylim(0, min(1.0, 1.25 * tallest) if tallest > 0 else 1.0)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", framealpha=0.9)
    fig.suptitle(title if title is not None else "Adversarial subspace dimension (GAAS, L2)", fontsize=12)
    save_png(fig, path)
    return fig
