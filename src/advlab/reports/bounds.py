"""The empirical CDF of the in-distribution robustness against Theorem 1 of Fawzi et al. (2018).

Every plotted value comes from a :class:`~advlab.evaluation.theory.BoundsTable` (its per-point
robustness and its ``L``); the bound curve is the closed form of eq. (6), nothing is re-measured.

>>> fig = bound_cdf_figure(table, path="report/bounds_cdf.png")
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from advlab.evaluation.theory import fawzi_bound_classwise
from advlab.reports._figure import new_figure, save_png

__all__ = ["bound_cdf_figure"]

_PANELS = (
    ("r_in", r"in-distribution robustness $r_{in} = \|g(z+r)-g(z)\|_2$", "in-distribution"),
    ("latent", r"latent robustness $\|r\|_2$ in Z", "latent space"),
)
LOG_SPAN = 10.0  # a bound this many times the smallest median gets a log η axis


def bound_cdf_figure(result: Any, *, path: str | os.PathLike[str] | None = None,
                     title: str | None = None, latent_panel: bool = True) -> Figure:
    """Plot ``P(r <= η)`` per classifier against Theorem 1's lower bound.

    Left: the empirical CDF of ``r_in`` over the table's samples, one step line per classifier
    (its median, from the table, in the legend), with eq. (6),
    ``max(0, 1 - √(π/2) exp(-(η/L)²/2))`` (black, dashed), its median ``L √(ln 2π)`` (dotted), and
    eq. (4) with each classifier's class frequencies (thin grey dash-dot). Theorem 1 says the *true*
    CDF lies above the bounds for every classifier (with the true ``L``; the table's ``L`` is an
    empirical lower estimate and its ``r_in`` are upper bounds on the true minima, so a curve below a
    bound is evidence about the estimates, not against the theorem). Right (``latent_panel``): the
    same for latent robustness, whose bound has ``L = 1``. The η axis is logarithmic when the bound
    on the median is more than ten times the smallest measured median.

    Args:
        result: a :class:`~advlab.evaluation.theory.BoundsTable` with at least one classifier.
        path: write a PNG (120 dpi) there.
        title: figure title; default names ``n``.

    Returns:
        The figure; each axes holds one line per classifier (labelled with its name), the bound
        (labelled ``Theorem 1, eq. (6) ...``) and the class-wise bounds (``eq. (4) ...``).
    """
    names = list(getattr(result, "results", {}) or {})
    if not names:
        raise ValueError("the bounds table has no classifiers to plot")
    panels = _PANELS if latent_panel else _PANELS[:1]
    fig = new_figure((6.2 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    n = result.results[names[0]].n
    for ax, (quantity, xlabel, kind) in zip(axes, panels):
        median_bound = result.bound(quantity)
        values = {name: result.results[name].values(quantity).double().cpu().numpy() for name in names}
        finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
        positive = finite[finite > 0]
        top = max(2.0 * median_bound, float(finite.max()) if finite.size else 0.0) * 1.02
        medians = {name: result.results[name].stats(quantity)["median"] for name in names}
        log_axis = positive.size > 0 and median_bound > LOG_SPAN * min(medians.values())
        if log_axis:
            etas = np.geomspace(float(positive.min()) / 1.5, top, 600)
        else:
            etas = np.linspace(0.0, top, 600)
        for name in names:
            _, cdf = result.cdf(name, etas, quantity=quantity)
            ax.plot(etas, cdf, drawstyle="steps-post", linewidth=1.6,
                    label=f"{name} (median {medians[name]:.3g})")
        L = 1.0 if quantity == "latent" else result.lipschitz
        for i, name in enumerate(names):
            ax.plot(etas, fawzi_bound_classwise(etas, L, class_probs=result.results[name].class_probs),
                    color="gray", linestyle="-.", linewidth=0.8,
                    label="Theorem 1, eq. (4), per-classifier class frequencies" if i == 0 else "_nolegend_")
        ax.plot(etas, result.bound_curve(etas, quantity=quantity), color="black", linestyle="--",
                linewidth=1.8, label=f"Theorem 1, eq. (6), L = {L:.3g}")
        ax.axvline(median_bound, color="black", linestyle=":", linewidth=1.2,
                   label=f"eq. (6) bound on the median: {median_bound:.3g}")
        ax.axhline(0.5, color="gray", linestyle=":", linewidth=0.8)
        if log_axis:
            ax.set_xscale("log")
            ax.set_xlim(etas[0], etas[-1])
        else:
            ax.set_xlim(0.0, top)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel(f"η: {xlabel}")
        ax.set_ylabel(r"$P(r \leq \eta)$")
        ax.grid(True, alpha=0.3, which="both" if log_axis else "major")
        ax.legend(fontsize=7.5, loc="upper left" if log_axis else "lower right", framealpha=0.9)
        ax.set_title(f"{kind} (L = {L:.3g})", fontsize=10)
    fig.suptitle(title or f"Empirical CDF vs Theorem 1 (Fawzi et al. 2018), n = {n} samples x = g(z)",
                 fontsize=11)
    save_png(fig, path)
    return fig
