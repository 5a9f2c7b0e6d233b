"""Geometry figures: the decision map(s), the successive-update cosine curves, the GAAS histogram.

The results are built by hand (no model runs), so these tests check rendering alone: the drawn
image is the stored class map, the legend names the classes, the curves are the stored means.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _png import assert_png
from conftest import CLASS_NAMES
from matplotlib.colors import to_hex

from advlab.evaluation.geometry import CosineSimilarity, DecisionMap, SubspaceDims
from advlab.reports._figure import PNG_DPI
from advlab.reports.geometry import (
    class_colors,
    cosine_figure,
    decision_map_figure,
    decision_maps_figure,
    subspace_dim_figure,
)

R = 21


def make_map(true_class: int = 0, *, clean_class: int | None = None, shift: float = 0.0) -> DecisionMap:
    """A 21×21 map over (-0.2, 0.2): the true class left of a ≈vertical boundary, class 6 right of
    it, class 2 in the top-right corner."""
    coords = torch.linspace(-0.2, 0.2, R, dtype=torch.float64)
    coords[R // 2] = 0.0
    a = coords[None, :].expand(R, R)
    b = coords[:, None].expand(R, R)
    classes = torch.full((R, R), true_class, dtype=torch.long)
    classes[a + 0.2 * b > 0.05 + shift] = 6
    classes[(a > 0.12) & (b > 0.12)] = 2
    u = torch.ones(1, 8, 8)
    v = torch.ones(1, 8, 8)
    v[..., ::2] = -1
    return DecisionMap(coords=coords, classes=classes, confidence=torch.full((R, R), 0.9), u=u, v=v,
                       true_class=true_class,
                       clean_class=true_class if clean_class is None else clean_class,
                       clean_confidence=0.97, num_classes=10, norm="linf", direction="fgsm",
                       other="random", bounds=None, clipped_fraction=0.0,
                       u_norms={"l2": 8.0, "linf": 1.0}, v_norms={"l2": 8.0, "linf": 1.0})


def _legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def test_decision_map_figure_draws_the_stored_classes_with_named_legend(tmp_path):
    dmap = make_map(true_class=0)
    path = tmp_path / "map.png"
    fig = decision_map_figure(dmap, class_names=CLASS_NAMES, path=path)
    (ax,) = fig.axes
    (image,) = ax.get_images()
    np.testing.assert_array_equal(np.asarray(image.get_array()), dmap.classes.numpy())
    assert ax.get_xlabel() == "ε along FGSM direction"
    assert ax.get_ylabel() == "ε along random orthogonal direction"
    texts = _legend_texts(ax.get_legend())
    assert texts == ["T-shirt (true)", "Pullover", "Shirt", "clean input"]
    # the origin (the clean input) is marked at (0, 0)
    origin = [line for line in ax.lines if line.get_label() == "clean input"]
    assert len(origin) == 1 and list(origin[0].get_xdata()) == [0.0] and list(origin[0].get_ydata()) == [0.0]
    # cells extend half a cell beyond the outer grid points, with 0 at the centre of the middle cell
    half = 0.01
    assert image.get_extent() == pytest.approx([-0.2 - half, 0.2 + half, -0.2 - half, 0.2 + half])
    # colours: the true class white (the lecture's convention), others their fixed class colour
    cmap = image.get_cmap()
    assert to_hex(cmap(0)) == "#ffffff"
    assert to_hex(cmap(6)) == to_hex(class_colors(10)[6])
    assert fig.get_suptitle() == "T-shirt (97%)"
    # the white true-class region is outlined along cell borders: one segment per differing pair
    inside = dmap.classes.numpy() == 0
    pairs = int((inside[:, 1:] != inside[:, :-1]).sum() + (inside[1:] != inside[:-1]).sum())
    (edges,) = [c for c in ax.collections if c.get_label() == "_true_edge"]
    assert len(edges.get_segments()) == pairs > 0
    w, h = fig.get_size_inches()
    assert_png(path, width=round(w * PNG_DPI), height=round(h * PNG_DPI))


def test_decision_map_figure_without_highlight_and_names():
    dmap = make_map(true_class=3, clean_class=6)
    fig = decision_map_figure(dmap, class_names=None, highlight_true=False)
    ax = fig.axes[0]
    assert _legend_texts(ax.get_legend()) == ["class 2", "class 3 (true)", "class 6", "clean input"]
    assert to_hex(ax.get_images()[0].get_cmap()(3)) == to_hex(class_colors(10)[3])
    assert fig.get_suptitle() == "class 3, predicted class 6 (97%)"


def test_decision_maps_figure_grid_and_shared_legend(tmp_path):
    maps = [make_map(true_class=c, shift=0.02 * c) for c in (0, 1, 6, 0, 8)]
    path = tmp_path / "maps.png"
    fig = decision_maps_figure(maps, class_names=CLASS_NAMES, ncols=3, path=path)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5 and len(fig.axes) == 6
    for ax, m in zip(visible, maps):
        np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), m.classes.numpy())
        assert ax.get_title().startswith(CLASS_NAMES[m.true_class])
    assert visible[0].get_ylabel() == "ε along random orthogonal direction"
    assert visible[1].get_ylabel() == ""
    assert visible[-1].get_xlabel() == "ε along FGSM direction"
    (legend,) = fig.legends
    texts = _legend_texts(legend)
    assert texts[0] == "true class" and texts[-1] == "clean input"
    # only classes drawn in colour somewhere: 6 is white in its own map but coloured in the others;
    # 0, 1 and 8 are only ever some map's true class (white), so they get no entry
    assert texts[1:-1] == [CLASS_NAMES[2], CLASS_NAMES[6]]
    w, h = fig.get_size_inches()
    assert_png(path, width=round(w * PNG_DPI), height=round(h * PNG_DPI))
    with pytest.raises(ValueError, match="at least one"):
        decision_maps_figure([])


def make_cosine() -> CosineSimilarity:
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(0.5, 0.9, 9, dtype=torch.float64)
    ifgsm = (base[None, :] + 0.05 * torch.randn(40, 9, generator=g, dtype=torch.float64)).clamp(-1, 1)
    mifgsm = (0.97 + 0.01 * torch.randn(40, 9, generator=g, dtype=torch.float64)).clamp(-1, 1)
    ifgsm[3, 2] = float("nan")
    return CosineSimilarity(update_cosine={"I-FGSM": ifgsm, "MI-FGSM": mifgsm},
                            direction_cosine={"I-FGSM": ifgsm - 0.01, "MI-FGSM": mifgsm - 0.01},
                            success={"I-FGSM": torch.ones(40, dtype=torch.bool),
                                     "MI-FGSM": torch.ones(40, dtype=torch.bool)},
                            configs={"I-FGSM": "IFGSM(...)", "MI-FGSM": "MIFGSM(...)"}, n=50, n_used=40)


def test_cosine_figure_plots_the_stored_per_step_means(tmp_path):
    cos = make_cosine()
    path = tmp_path / "cos.png"
    fig = cosine_figure(cos, path=path)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.lines}
    labels = [f"I-FGSM (mean {cos.mean('I-FGSM'):.3f})", f"MI-FGSM (mean {cos.mean('MI-FGSM'):.3f})"]
    assert list(lines) == labels
    for label, name in zip(labels, cos.names):
        np.testing.assert_allclose(lines[label].get_xdata(), np.arange(1, 10))
        np.testing.assert_allclose(lines[label].get_ydata(), cos.per_step(name).numpy())
    assert not math.isnan(float(cos.per_step("I-FGSM")[2]))  # one NaN point is left out, not spread
    assert len(ax.collections) == 2  # the quantile bands
    assert ax.get_ylim()[1] == pytest.approx(1.02) and "n = 40" in ax.get_title()
    w, h = fig.get_size_inches()
    assert_png(path, width=round(w * PNG_DPI), height=round(h * PNG_DPI))
    fig2 = cosine_figure(cos, of="direction", band=None)
    assert len(fig2.axes[0].collections) == 0
    np.testing.assert_allclose(fig2.axes[0].lines[1].get_ydata(), cos.per_step("MI-FGSM", of="direction").numpy())


def test_subspace_dim_figure_bars_are_the_distribution(tmp_path):
    ks = (1, 2, 4, 8)
    dims = torch.tensor([0, 1, 2, 2, 4, 8, 8, 8, -1, 4])
    res = SubspaceDims(ks=ks, n_adversarial=torch.zeros(10, 4, dtype=torch.long), dims=dims,
                       correct=dims >= 0, zero_grad=torch.zeros(10, dtype=torch.bool), eps=2.0,
                       fraction=1.0, bounds=None)
    fig = subspace_dim_figure([res], path=tmp_path / "gaas.png")
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([1 / 9, 1 / 9, 2 / 9, 2 / 9, 3 / 9])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "4", "8"]
    assert ax.get_legend().get_texts()[0].get_text().startswith("ε = 2 (n = 9, mean")
    assert (tmp_path / "gaas.png").stat().st_size > 5000
