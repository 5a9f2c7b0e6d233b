"""Robust accuracy against ε, one line per attack, from an :class:`~advlab.evaluation.Evaluation`.

Every plotted value is a stored ``EvalRow.robust_accuracy`` (times 100); nothing is recomputed.

>>> fig = accuracy_curve(evaluation, path="robust_accuracy.png")
"""

from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure

from advlab.evaluation.robustness import WORST_CASE, clean_groups
from advlab.reports._figure import eps_symbol, new_figure, save_png

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
SYMLOG_SPAN = 10.0  # positive ε spanning more than this ratio get a symlog axis
LEGEND_INSIDE = 8  # legends with more entries go to the right of the axes
# line styles cycle with the markers, and markers are hollow, so attacks whose curves coincide
# (I-FGSM, PGD and MI-FGSM often do) stay visible under one another
LINESTYLES = ("-", (0, (5, 1.5)), (0, (1.5, 1)), (0, (6, 1.5, 1.5, 1.5)))


def accuracy_curve(evaluation: Any, *, path: str | os.PathLike[str] | None = None,
                   title: str | None = None) -> Figure:
    """Plot robust accuracy (%) against ε for each attack of ``evaluation``.

    One line with markers per attack in ``evaluation.attacks`` order (``worst-case`` dashed
    black), the clean accuracy as a dotted horizontal line, y from 0 to 100. The ε axis is
    linear unless the positive ε span more than one order of magnitude (the usual 0.01 ... 0.7
    grid crowds five of seven values into the left third of a linear axis), then symlog (linear
    below the smallest positive ε, so ε = 0 stays on the axis). Line styles vary with the
    markers, which are hollow, so coinciding curves remain visible. The subtitle states the
    denominators: ``n`` points, of which ``n_correct`` are attacked.

    Args:
        evaluation: an :class:`~advlab.evaluation.Evaluation` with at least one row.
        path: write a PNG (120 dpi) there.
        title: defaults to ``"Robust accuracy vs ε (<norm>)"``.

    Returns:
        The figure; its one axes holds one line per attack (labelled with the attack's name)
        and the clean-accuracy line (labelled ``clean ...``).
    """
    rows = list(evaluation.rows)
    if not rows:
        raise ValueError("the evaluation has no rows to plot")
    first = rows[0]
    norms = list(dict.fromkeys(r.norm for r in rows))
    norm = norms[0] if len(norms) == 1 else "/".join(norms)

    fig = new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    markers = iter(MARKERS * (len(evaluation.attacks) // len(MARKERS) + 1))
    styles = iter(LINESTYLES * (len(evaluation.attacks) // len(LINESTYLES) + 1))
    for name in evaluation.attacks:
        points = sorted((r.eps, 100.0 * r.robust_accuracy) for r in rows if r.attack == name)
        eps = [p[0] for p in points]
        acc = [p[1] for p in points]
        if name == WORST_CASE:
            ax.plot(eps, acc, color="black", linestyle="--", marker="x", linewidth=1.8, markersize=7,
                    label=name, zorder=3, clip_on=False)
        else:
            ax.plot(eps, acc, marker=next(markers), linestyle=next(styles), linewidth=1.6, markersize=6,
                    markerfacecolor="none", markeredgewidth=1.4, label=name, clip_on=False)
    groups = clean_groups(rows)
    for (label, r), shade in zip(groups, ("gray", "#b07aa1", "#9c755f", "#bab0ac") * len(groups)):
        ax.axhline(100.0 * r.clean_accuracy, color=shade, linestyle=":", linewidth=1.5,
                   label=(f"clean {label} " if len(groups) > 1 else "clean ")
                   + f"{100 * r.clean_accuracy:.1f}% ({r.n_correct}/{r.n})")

    positive = [e for e in evaluation.eps if e > 0]
    if len(positive) >= 2 and max(positive) / min(positive) > SYMLOG_SPAN:
        linthresh = min(positive)
        ax.set_xscale("symlog", linthresh=linthresh)
        # symlog autoscaling pads into negative ε; keep the axis on the measured range.
        lowest = min(evaluation.eps)
        ax.set_xlim(-0.4 * linthresh if lowest <= 0 else lowest / 1.5, 1.5 * max(positive))
        ticks = sorted(set(evaluation.eps))  # the measured ε, as the user wrote them, not decades
        ax.set_xticks(ticks, [f"{e:g}" for e in ticks], fontsize=8)
        ax.minorticks_off()
    ax.set_ylim(0, 100)
    ax.set_xlabel(eps_symbol(norm))
    ax.set_ylabel("robust accuracy (%)")
    ax.grid(True, alpha=0.3)
    if len(evaluation.attacks) + len(groups) > LEGEND_INSIDE:
        # many lines: a legend inside the axes would cover them; put it to the right instead
        fig.set_size_inches(9.6, 4.2)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  framealpha=0.9)
    else:
        ax.legend(fontsize=9, loc="best", framealpha=0.9)
    ns = sorted({(r.n, r.n_correct) for r in rows})
    if len(ns) == 1:
        subtitle = (f"n = {first.n} points; attacks run on the {first.n_correct} "
                    f"correctly classified ones")
    else:
        subtitle = "n varies: " + ", ".join(f"{n_correct}/{n}" for n, n_correct in ns)
    fig.suptitle(title if title is not None else f"Robust accuracy vs ε ({norm})", fontsize=12)
    ax.set_title(subtitle, fontsize=9, color="#444444")
    save_png(fig, path)
    return fig
