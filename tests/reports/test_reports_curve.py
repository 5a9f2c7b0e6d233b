"""accuracy_curve: one line per attack with the stored robust accuracies, in %, and the axes."""

from __future__ import annotations

import html

import numpy as np
import pytest
from _png import assert_png
from conftest import EPS, N, N_CORRECT, ROBUST, make_rows
from matplotlib.colors import to_hex

from advlab.evaluation import Evaluation
from advlab.reports import accuracy_curve


def _lines(fig):
    (ax,) = fig.axes
    return ax, {line.get_label(): line for line in ax.lines}


def test_one_line_per_attack_with_stored_values_in_percent(evaluation):
    ax, lines = _lines(accuracy_curve(evaluation))
    clean = f"clean 90.0% ({N_CORRECT}/{N})"
    assert list(lines) == ["FGSM", "PGD", "worst-case", clean]
    for name, counts in ROBUST.items():
        np.testing.assert_allclose(lines[name].get_xdata(), EPS)
        np.testing.assert_allclose(lines[name].get_ydata(), [100 * k / N for k in counts])
        assert lines[name].get_marker() not in (None, "None", "")
    np.testing.assert_allclose(lines[clean].get_ydata(), [90.0, 90.0])


def test_plotted_values_are_the_stored_ones_not_recomputed(evaluation):
    """A row whose robust_accuracy disagrees with n_robust / n is drawn as stored."""
    rows = list(evaluation.rows)
    rows[1] = type(rows[1])(**{**rows[1].__dict__, "robust_accuracy": 0.123})
    _, lines = _lines(accuracy_curve(Evaluation(rows=rows)))
    assert lines[rows[1].attack].get_ydata()[0] == pytest.approx(12.3)


def test_styles_worst_case_dashed_black_clean_dotted(evaluation):
    _, lines = _lines(accuracy_curve(evaluation))
    assert lines["worst-case"].get_linestyle() == "--"
    assert to_hex(lines["worst-case"].get_color()) == "#000000"
    # the attacks' styles differ (#11: I-FGSM, PGD and MI-FGSM hid under each other), markers hollow
    assert lines["FGSM"].get_linestyle() == "-" and lines["PGD"].get_linestyle() != "-"
    assert lines["FGSM"].get_markerfacecolor() == "none"
    clean = [line for label, line in lines.items() if label.startswith("clean")][0]
    assert clean.get_linestyle() == ":"


def test_axes_limits_labels_and_denominators(evaluation):
    fig = accuracy_curve(evaluation)
    ax, _ = _lines(fig)
    assert ax.get_ylim() == (0.0, 100.0)
    assert ax.get_xscale() == "linear"
    assert "robust accuracy (%)" in ax.get_ylabel()
    assert f"n = {N}" in ax.get_title() and str(N_CORRECT) in ax.get_title()
    assert fig.get_suptitle() == "Robust accuracy vs ε (linf)"
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == ["FGSM", "PGD", "worst-case"]
    assert accuracy_curve(evaluation, title="Mine").get_suptitle() == "Mine"


def test_wide_eps_span_gets_symlog():
    eps = (0.0, 0.001, 0.01, 0.5)
    ev = Evaluation(rows=make_rows(eps=eps, robust={"FGSM": (180, 170, 120, 3)}))
    ax, lines = _lines(accuracy_curve(ev))
    assert ax.get_xscale() == "symlog"
    lo, hi = ax.get_xlim()
    assert lo < 0 < 0.001 and hi > 0.5 and lo > -0.001  # ε = 0 shown, no negative decade
    np.testing.assert_allclose(lines["FGSM"].get_xdata(), eps)
    narrow = Evaluation(rows=make_rows(eps=(0.01, 0.1), robust={"FGSM": (170, 3)}))
    assert _lines(accuracy_curve(narrow))[0].get_xscale() == "linear"  # exactly 10x: linear
    # #11: the default grid 0.01 ... 0.7 (70x) crowded five of seven values into the left third
    usual = Evaluation(rows=make_rows(eps=(0.01, 0.05, 0.1, 0.7), robust={"FGSM": (170, 120, 60, 3)}))
    assert _lines(accuracy_curve(usual))[0].get_xscale() == "symlog"


def test_png_is_written(tmp_path, evaluation):
    path = tmp_path / "curve.png"
    fig = accuracy_curve(evaluation, path=path)
    w, h = fig.get_size_inches()
    assert_png(path, width=round(w * 120), height=round(h * 120))


def test_empty_evaluation_is_refused():
    with pytest.raises(ValueError, match="no rows"):
        accuracy_curve(Evaluation(rows=[]))


def test_a_comparison_of_models_states_each_models_clean_accuracy_and_keeps_the_legend_off_the_lines():
    """Seen on ``advlab defend``'s page in headless Chromium: the denominators sentence and the
    dotted clean line gave the undefended model's clean accuracy (335/450) for both models
    (the defended one had 345/450), and a 10-entry legend covered the curves."""
    from advlab.evaluation.robustness import denominators
    from advlab.reports.page import _summary_table

    rows = []
    for model, n_correct in (("undefended", 335), ("defended", 345)):
        robust = {f"{model} · {a}": (n_correct, n_correct - 40 - i, n_correct - 90 - i)
                  for i, a in enumerate(("PGD-CE", "PGD-CW", "worst-case", "transfer MI-FGSM", "Square"))}
        rows += make_rows(n=450, n_correct=n_correct, robust=robust)
    ev = Evaluation(rows=rows)
    sentence = denominators(rows)
    assert "undefended 74.4% (335/450), defended 76.7% (345/450)" in sentence
    assert "each row's correctly classified points" in sentence
    assert sentence in ev.table() and any(html.escape(sentence) in line for line in _summary_table(ev))
    fig = accuracy_curve(ev)
    ax = fig.axes[0]
    clean = sorted(line.get_label() for line in ax.get_lines() if line.get_label().startswith("clean"))
    assert clean == ["clean defended 76.7% (345/450)", "clean undefended 74.4% (335/450)"]
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1   # beside the axes, not over the curves


def test_one_model_keeps_the_one_sentence(evaluation):
    from advlab.evaluation.robustness import denominators

    assert denominators(evaluation.rows) == ("over n = 200 points; clean accuracy 90.0% (180/200); attacks run "
                                             "on the 180 correctly classified points; norm linf.")
