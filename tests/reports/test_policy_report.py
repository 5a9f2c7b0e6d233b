"""The policy-return figure draws what the PolicyCurve holds: one panel per norm, one line per
method starting from the clean return, and a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from advlab.evaluation import PolicyCurve, PolicyRow
from advlab.reports import policy_return_figure


def _row(method: str, norm: str, eps: float, returns: tuple[float, ...]) -> PolicyRow:
    return PolicyRow(method=method, norm=norm, eps=eps, returns=returns, flip_rate=0.1, steps=100)


def _curve() -> PolicyCurve:
    rows = [_row("clean", "none", 0.0, (500.0, 500.0))]
    for norm, grid in (("linf", (0.1, 0.2)), ("l2", (0.25, 0.5))):
        for method, scale in (("FGSM", 0.2), ("noise", 0.8)):
            rows += [_row(method, norm, e, (500 * scale / (1 + k), 400 * scale / (1 + k)))
                     for k, e in enumerate(grid)]
    return PolicyCurve(env_id="CartPole-v1", episodes=2, seed=0, rows=tuple(rows))


def test_the_figure_draws_the_rows_and_writes_a_png(tmp_path):
    curve = _curve()
    path = tmp_path / "fig" / "return.png"
    fig = policy_return_figure(curve, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = fig.axes
    assert len(axes) == 2 and "L_\\infty" in axes[0].get_xlabel() and "L_2" in axes[1].get_xlabel()
    for ax, norm in zip(axes, ("linf", "l2")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        fgsm = lines["FGSM"]
        assert np.allclose(fgsm.get_xdata(), [0.0] + [r.eps for r in curve.series("FGSM", norm)])
        assert np.allclose(fgsm.get_ydata(), [500.0] + [r.mean for r in curve.series("FGSM", norm)])
        assert np.allclose(lines["noise (same norm)"].get_ydata()[1:],
                           [r.mean for r in curve.series("noise", norm)])
        assert lines["noise (same norm)"].get_linestyle() == "--"
        assert "clean 500" in lines


def test_a_curve_without_attacks_is_refused():
    clean_only = PolicyCurve(env_id="CartPole-v1", episodes=1, seed=0,
                             rows=(_row("clean", "none", 0.0, (500.0,)),))
    with pytest.raises(ValueError, match="only its clean row"):
        policy_return_figure(clean_only)
