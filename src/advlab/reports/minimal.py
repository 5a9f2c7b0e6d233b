"""Minimal-perturbation distributions: robust accuracy from the distances, and their histogram.

Every plotted value comes from a :class:`~advlab.evaluation.MinimalNorms` (its per-point distances,
curves, medians and histograms); nothing is re-measured.

>>> fig = minimal_norms_figure(mn, path="report/minimal_norms.png")
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from advlab.reports._figure import new_figure, norm_symbol, save_png

__all__ = ["minimal_norms_figure"]

BEST = "best of all"


def minimal_norms_figure(result: Any, *, path: str | os.PathLike[str] | None = None,
                         title: str | None = None, bins: int = 30, curve_points: int = 200) -> Figure:
    """Two panels from per-point minimal distances.

    Left: robust accuracy (% of all ``n`` points) against ε, read off the distances in one pass
    (a point is robust at ε when its distance exceeds ε): one line per attack and, with several
    attacks, the per-point best (black). Right: the distribution of the distances of the correctly
    classified points (histogram per attack, the best in black outline), each median a vertical
    line; points no attack broke are counted in the legend, never drawn at a made-up distance.

    Args:
        result: a :class:`~advlab.evaluation.MinimalNorms`.
        path: write a PNG (120 dpi) there.
        title: default names the norm and the denominators.

    Returns:
        The figure; the left axes holds one line per attack (labelled by name, plus ``best of
        all`` with several attacks) and the right axes one histogram per line.
    """
    attacks = list(result.attacks)
    series: list[tuple[str, str | None]] = [(a, a) for a in attacks]
    if len(attacks) != 1:
        series.append((BEST, None))
    top = 0.0
    for _, key in series:
        d = result.sorted_distances(attack=key)
        if d.numel():
            top = max(top, float(d.max()))
    top = top if top > 0 else 1.0
    sym = norm_symbol(result.norm)
    fig = new_figure((12.0, 4.4))
    ax_curve, ax_hist = fig.subplots(1, 2)
    edges = np.linspace(0.0, top, bins + 1)
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                   "tab:pink", "tab:olive", "tab:cyan"] * 4)
    for name, key in series:
        color = "black" if key is None and len(attacks) > 1 else next(colors)
        eps, acc = result.curve(num=curve_points, eps_max=top, attack=key)
        median = result.median(correct_only=True, attack=key)
        unbroken = int(np.isinf(result._d(key).numpy()).sum())
        med = f"{median:.3g}" if math.isfinite(median) else "∞"
        label = f"{name}: median {med}" + (f", {unbroken} unbroken" if unbroken else "")
        ax_curve.plot(eps.numpy(), 100.0 * acc.numpy(), color=color,
                      linewidth=2.2 if key is None else 1.6, label=label)
        d = result.sorted_distances(attack=key).numpy()
        if key is None:
            ax_hist.hist(d, bins=edges, histtype="step", color=color, linewidth=1.8, label=label)
        else:
            ax_hist.hist(d, bins=edges, histtype="stepfilled", alpha=0.35, color=color, label=label)
        if math.isfinite(median):
            ax_hist.axvline(median, color=color, linestyle="--", linewidth=1.2)
    ax_curve.axhline(100.0 * result.clean_accuracy, color="gray", linestyle=":", linewidth=1.4,
                     label=f"clean {100 * result.clean_accuracy:.1f}%")
    ax_curve.set_xlim(0.0, top)
    ax_curve.set_ylim(0.0, 100.0)
    ax_curve.set_xlabel(f"ε ({sym} radius)")
    ax_curve.set_ylabel("robust accuracy (%)")
    ax_curve.set_title("robust accuracy from minimal distances")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=8, loc="upper right")
    ax_hist.set_xlabel(f"minimal {sym} perturbation of correctly classified points")
    ax_hist.set_ylabel("points")
    ax_hist.set_title("distribution (dashed: medians)")
    ax_hist.grid(alpha=0.3)
    ax_hist.legend(fontsize=8, loc="upper right")
    fig.suptitle(title or f"Minimal {sym} perturbations: n = {result.n} points, "
                          f"{result.n_correct} correctly classified (the attacked ones)")
    if path is not None:
        save_png(fig, path)
    return fig
