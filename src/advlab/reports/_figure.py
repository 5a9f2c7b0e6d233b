"""Small helpers shared by the report figures: array conversion and PNG output.

Figures are built as bare :class:`matplotlib.figure.Figure` objects with an Agg canvas, never
through ``pyplot``, so rendering a report touches no global plotting state (no backend switch,
no figure registry that keeps figures alive).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from advlab._io import atomic_write

PNG_DPI = 120

NORM_LABEL = {"linf": r"\infty", "l2": "2", "l1": "1"}


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with its own Agg canvas and constrained layout, detached from pyplot."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str] | None, *, dpi: int = PNG_DPI) -> None:
    """Write ``fig`` as PNG to ``path`` (parent folders are created); nothing when ``path`` is None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor="white"))


def to_numpy(values: Any, *, name: str) -> np.ndarray:
    """A torch tensor, NumPy array or sequence as a NumPy array (tensors are detached, on CPU)."""
    if values is None:
        raise ValueError(f"{name} is required")
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if values.dtype.is_floating_point:
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def norm_symbol(norm: str) -> str:
    """Mathtext for ``||delta||_p`` in the given norm (``linf``, ``l2``, ``l1``)."""
    sub = NORM_LABEL.get(norm, norm)
    return rf"$\|\delta\|_{{{sub}}}$"


def eps_symbol(norm: str) -> str:
    """Axis label text for a radius in the given norm, e.g. ``ε (L∞)``."""
    return {"linf": r"$\varepsilon$ ($L_\infty$)", "l2": r"$\varepsilon$ ($L_2$)",
            "l1": r"$\varepsilon$ ($L_1$)"}.get(norm, rf"$\varepsilon$ ({norm})")
