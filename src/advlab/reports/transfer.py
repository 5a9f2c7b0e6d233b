"""Transferability heatmaps: source × target success, from a TransferMatrix or stored rates."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from advlab.reports._figure import new_figure, save_png

__all__ = ["transfer_heatmap"]


def heatmap_figure(grid: np.ndarray, sources: Sequence[str], targets: Sequence[str], *, title: str,
                   diagonal: bool = False) -> Figure:
    """A heatmap of ``grid`` ``(S, T)`` in percent (NaN cells blank), each cell written out; with
    ``diagonal=True`` the white-box cells (source = target) are outlined."""
    fig = new_figure((1.8 + 0.95 * len(targets), 1.5 + 0.62 * len(sources)))
    ax = fig.add_subplot()
    im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(range(len(targets)), targets, rotation=30 if len(targets) > 5 else 0,
                  ha="right" if len(targets) > 5 else "center")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target (shown the examples)")
    ax.set_ylabel("source (crafted on)")
    for i in range(len(sources)):
        for j in range(len(targets)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}" if len(targets) > 6 else f"{grid[i, j]:.1f}", ha="center",
                        va="center", color="white" if grid[i, j] < 60 else "black", fontsize=8)
            if diagonal and sources[i] == targets[j]:
                ax.add_patch(_rect(j, i))
    fig.colorbar(im, ax=ax, label="success (% of target-correct points)")
    ax.set_title(title, fontsize=10)
    return fig


def _rect(j: int, i: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5)


def transfer_heatmap(matrix: Any, *, path: str | os.PathLike[str] | None = None,
                     title: str | None = None) -> Figure:
    """The heatmap of a :class:`~advlab.evaluation.TransferMatrix`: cell ``(s, t)`` is the
    success of examples crafted on ``s`` over the points ``t`` classifies correctly; the outlined
    diagonal is white-box success."""
    grid = np.array([[100 * matrix.rate(s, t) if not math.isnan(matrix.rate(s, t)) else np.nan
                      for t in matrix.targets] for s in matrix.sources], dtype=float)
    fig = heatmap_figure(grid, matrix.sources, matrix.targets, diagonal=True,
                         title=title or f"{matrix.attack}, n = {matrix.n}")
    save_png(fig, path)
    return fig
