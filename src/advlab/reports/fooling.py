"""The gallery of fooling images: per class, the noise the model is sure belongs to it."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from advlab.reports._figure import new_figure, save_png


def fooling_gallery(result: Any, *, class_names: Sequence[str] | None = None,
                    path: str | os.PathLike[str] | None = None, title: str | None = None) -> Any:
    """One column per class, one row per image of :func:`advlab.evaluation.fooling_images`'s
    result; each image captioned with its class and the model's probability for it (red where
    it did not reach the level)."""
    target = result.target.cpu().numpy()
    classes = sorted(set(target.tolist()))
    per = max(int((target == c).sum()) for c in classes)
    fig = new_figure((1.3 * len(classes) + 0.4, 1.5 * per + 0.6))
    axes = fig.subplots(per, len(classes), squeeze=False)
    x = result.x.detach().float().cpu().numpy()
    conf = result.confidence.cpu().numpy()
    reached = result.reached.cpu().numpy()
    for j, c in enumerate(classes):
        rows = np.nonzero(target == c)[0]
        for i in range(per):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(rows):
                ax.axis("off")
                continue
            k = rows[i]
            img = x[k]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(np.clip(np.moveaxis(img[:3], 0, -1), 0.0, 1.0))
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.set_title(f"{name}\np={conf[k]:.3f}", fontsize=7, color="black" if reached[k] else "tab:red")
    fig.suptitle(title or f"Fooling images from {result.start_kind} noise (level {result.level:g})", fontsize=9)
    save_png(fig, path)
    return fig


__all__ = ["fooling_gallery"]
