"""Episode return against ε for attacks on a policy's observations (Huang et al. 2017), beside
noise of the same norm.

Every plotted value comes from a :class:`~advlab.evaluation.PolicyCurve` (its rows' mean and
standard deviation of the return); nothing is re-run.

>>> fig = policy_return_figure(curve, path="report/cartpole_return.png")
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from advlab.reports._figure import eps_symbol, new_figure, save_png

__all__ = ["policy_return_figure"]

STYLE = {"FGSM": ("tab:red", "-", "o"), "PGD": ("tab:purple", "-", "s"), "noise": ("tab:gray", "--", "^")}


def policy_return_figure(curve: Any, *, path: str | os.PathLike[str] | None = None,
                         title: str | None = None) -> Figure:
    """One panel per norm of the curve (L∞, then L2): mean episode return against ε for each
    method (attacks solid, noise dashed), a band of ± one standard deviation over the episodes
    (cut at 0 and at the best return seen), every line starting from the clean return at ε = 0 (the dotted line).

    Args:
        curve: a :class:`~advlab.evaluation.PolicyCurve` from
            :func:`~advlab.evaluation.policy_return_vs_eps`.
        path: write a PNG (120 dpi) there.
        title: default names the environment and the number of episodes per point.

    Returns:
        The figure; each axes holds one line per method, labelled by the method's name.
    """
    norms = curve.norms
    if not norms:
        raise ValueError("the curve has only its clean row: run policy_return_vs_eps with some eps")
    clean = curve.clean
    fig = new_figure((5.2 * len(norms) + 0.4, 4.2))
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    # a return cannot exceed the best one seen (CartPole's cap): the ± std band stops there
    top = max(max(max(r.returns) for r in curve.rows), 1.0)
    for ax, norm in zip(axes, norms):
        for method in curve.methods(norm):
            rows = curve.series(method, norm)
            eps = np.array([0.0] + [r.eps for r in rows])
            mean = np.array([clean.mean] + [r.mean for r in rows])
            std = np.array([clean.std] + [r.std for r in rows])
            color, style, marker = STYLE.get(method, ("tab:blue", "-", "o"))
            ax.plot(eps, mean, color=color, linestyle=style, marker=marker, markersize=4, linewidth=1.6,
                    label=method if method != "noise" else "noise (same norm)")
            ax.fill_between(eps, np.clip(mean - std, 0, None), np.clip(mean + std, None, top), color=color,
                            alpha=0.15, linewidth=0)
        ax.axhline(clean.mean, color="black", linestyle=":", linewidth=1.0, label=f"clean {clean.mean:.0f}")
        ax.set_xlabel(eps_symbol(norm))
        ax.set_ylabel("episode return")
        ax.set_ylim(0.0, 1.05 * top)
        ax.set_xlim(left=0.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or f"{curve.env_id}: return under observation attacks, {curve.episodes} episodes "
                          "per point (mean ± std)", fontsize=10)
    save_png(fig, path)
    return fig
