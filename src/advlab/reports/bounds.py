"""The empirical CDF of the in-distribution robustness against Theorem 1 of Fawzi et al. (2018),
and, when the table holds them, Theorem 2 (projected classifier) and Theorem 3 (transfer) panels.

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
                     title: str | None = None, latent_panel: bool = True, theorem_panels: bool = True) -> Figure:
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

    When the table holds them (and ``theorem_panels``), one panel more for each of:

    * Theorem 2: per point, the measured ``r_unc(f̃)`` of the projected classifier against
      ``r_in(f)``, one marker set per classifier, with the theorem's line ``r_unc = r_in / 2``
      (labelled ``Theorem 2 ...``; every point should lie on or above it) and ``r_unc = r_in``;
    * Theorem 3: per pair, the measured rate ``P(r_joint <= η)`` (steps) and its bound
      ``1 - √(π/2) exp(-(η/L)²/2) - 2δ`` (dashed, labelled ``Theorem 3 ...``).

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
    extra = []
    if theorem_panels and getattr(result, "projected", None):
        extra.append(_theorem2_panel)
    if theorem_panels and getattr(result, "transfer", None):
        extra.append(_theorem3_panel)
    fig = new_figure((6.2 * (len(panels) + len(extra)), 4.4))
    all_axes = fig.subplots(1, len(panels) + len(extra), squeeze=False)[0]
    axes = all_axes[:len(panels)]
    for ax, draw in zip(all_axes[len(panels):], extra):
        draw(ax, result)
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
    which = "Theorems 1-3" if extra else "Theorem 1"
    fig.suptitle(title or f"Empirical CDF vs {which} (Fawzi et al. 2018), n = {n} samples x = g(z)",
                 fontsize=11)
    save_png(fig, path)
    return fig


def _theorem2_panel(ax: Any, result: Any) -> None:
    """Measured ``r_unc(f̃)`` against ``r_in(f)`` per point, with Theorem 2's line ``r_in / 2``."""
    top = 0.0
    for name, res in result.projected.items():
        r_in = res.r_in.double().cpu().numpy()
        r_unc = res.r_unc_projected.double().cpu().numpy()
        ok = np.isfinite(r_in) & np.isfinite(r_unc)
        top = max(top, float(r_in[ok].max()) if ok.any() else 0.0, float(r_unc[ok].max()) if ok.any() else 0.0)
        v = res.violations()
        ax.scatter(r_in[ok], r_unc[ok], s=14, alpha=0.8,
                   label=f"{name}: {100 * res.fraction_half():.0f}% ≥ r_in/2 ({v['total']} of {v['measured']} below)")
    top = top * 1.05 or 1.0
    line = np.array([0.0, top])
    ax.plot(line, line / 2, color="black", linestyle="--", linewidth=1.8,
            label="Theorem 2: r_unc(f̃) ≥ r_in(f) / 2")
    ax.plot(line, line, color="gray", linestyle=":", linewidth=1.0, label="r_unc(f̃) = r_in(f)")
    ax.set_xlim(0.0, top)
    ax.set_ylim(0.0, top)
    ax.set_xlabel(r"$r_{in}(f)$ at x = g(z)")
    ax.set_ylabel(r"measured $r_{unc}(\tilde f)$, $\tilde f = f \circ g \circ \mathrm{argmin}_z$")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", framealpha=0.9)
    ax.set_title("Theorem 2: the projected classifier", fontsize=10)


def _theorem3_panel(ax: Any, result: Any) -> None:
    """Measured joint-fooling rate against Theorem 3's bound, per pair."""
    from advlab.evaluation.theory import transfer_bound

    etas = result.theorem3_etas()
    grid = np.linspace(0.0, float(etas.max()) * 1.05, 400)
    for i, (name, res) in enumerate(result.transfer.items()):
        (line,) = ax.plot(grid, res.rate(grid), drawstyle="steps-post", linewidth=1.6,
                          label=f"{name}: measured (δ = {res.delta:.3f})")
        ax.plot(grid, transfer_bound(grid, result.lipschitz, delta=res.delta), color=line.get_color(),
                linestyle="--", linewidth=1.4, label=f"Theorem 3 bound, {name}")
    ax.set_xlim(0.0, grid[-1])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(r"η: $\|g(z+r)-g(z)\|_2$ fooling both")
    ax.set_ylabel(r"$P(\exists v, \|v\|_2 \leq \eta$: both fooled$)$")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right", framealpha=0.9)
    ax.set_title(f"Theorem 3: one perturbation, two classifiers (L = {result.lipschitz:.3g})", fontsize=10)
