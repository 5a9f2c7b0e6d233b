"""The minimal-norm figure draws exactly the stored curves and distances."""

from __future__ import annotations

import math

import numpy as np
import torch

from advlab.evaluation import MinimalNorms
from advlab.reports import minimal_norms_figure


def _mn() -> MinimalNorms:
    a = torch.tensor([0.0, 0.5, 1.0, math.inf, 2.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.4, 1.5, 3.0, math.inf], dtype=torch.float64)
    correct = torch.tensor([False, True, True, True, True])
    return MinimalNorms(distances=torch.minimum(a, b), norm="l2", correct=correct,
                        by_attack={"A": a, "B": b})


def test_lines_are_the_stored_curves_and_unbroken_points_are_counted(tmp_path):
    mn = _mn()
    fig = minimal_norms_figure(mn, path=tmp_path / "m.png")
    ax_curve, ax_hist = fig.axes[:2]
    labels = [line.get_label() for line in ax_curve.get_lines()]
    assert labels[0].startswith("A: median") and "1 unbroken" in labels[0]
    assert labels[1].startswith("B: median") and "1 unbroken" in labels[1]
    assert labels[2].startswith("best of all") and "unbroken" not in labels[2]
    for line, key in zip(ax_curve.get_lines()[:3], ("A", "B", None)):
        eps, acc = line.get_data()
        expected = mn.robust_accuracy_curve(torch.as_tensor(eps), attack=key).numpy() * 100
        assert np.allclose(acc, expected)
    # one dashed median line per series, at the stored medians of the correct points
    medians = sorted(line.get_xdata()[0] for line in ax_hist.get_lines())
    assert medians == sorted([mn.median(correct_only=True, attack=k) for k in ("A", "B", None)])
    assert (tmp_path / "m.png").stat().st_size > 5000
