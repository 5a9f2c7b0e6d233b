"""signal_gallery (curves per channel) and changed_features_table: rendering hand-built results."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from _png import assert_png
from matplotlib.colors import to_hex

from advlab.attacks import AttackResult
from advlab.data import FeatureScaling
from advlab.reports import (changed_features_from_result, changed_features_table, signal_gallery,
                            signal_gallery_from_result)
from advlab.reports.gallery import CHANGED_COLOR
from advlab.threat import ThreatModel

CLASSES = ["Standing", "Running", "Walking"]


def _result(x: torch.Tensor, delta: torch.Tensor, *, success, pred, conf) -> AttackResult:
    b = x.shape[0]
    return AttackResult(x_adv=x + delta, success=torch.tensor(success), pred=torch.tensor(pred),
                        confidence=torch.tensor(conf),
                        norms=delta.flatten(1).abs().amax(1), num_grads=torch.full((b,), 10),
                        num_forwards=torch.full((b,), 11), threat=ThreatModel(norm="linf", eps=0.1, bounds=(0.0, 1.0)),
                        attack="PGD(eps=0.1, norm='linf', steps=10)")


@pytest.fixture()
def signals() -> tuple[torch.Tensor, AttackResult, FeatureScaling]:
    t = torch.linspace(0, 6.28, 20)
    x = torch.stack([torch.stack([0.5 + 0.3 * torch.sin(t + k), 0.5 + 0.2 * torch.cos(t * (k + 1))])
                     for k in range(3)])  # (3, 2, 20) in [0.2, 0.8]
    delta = 0.1 * torch.sign(torch.sin(3 * t)).expand(3, 2, 20)
    result = _result(x, delta, success=[False, True, True], pred=[0, 2, 0], conf=[0.55, 0.7, 0.61])
    return x, result, FeatureScaling(low=(-10.0, 0.0), high=(10.0, 5.0), fitted_on="train file")


def test_signal_gallery_draws_each_channel_in_original_units(tmp_path, signals) -> None:
    x, result, scaling = signals
    path = tmp_path / "s.png"
    fig = signal_gallery(x, result.x_adv, class_names=CLASSES, clean_pred=[0, 1, 2], clean_conf=[0.9, 0.8, 0.7],
                         adv_pred=result.pred, adv_conf=result.confidence, true_labels=[0, 1, 2],
                         channel_names=("accel", "gyro"), scaling=scaling, n=3, path=path)
    assert len(fig.subfigs) == 3 and len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes] == ["accel", "gyro"] * 3
    headings = [sub._suptitle for sub in fig.subfigs]
    assert headings[0].get_text().startswith("true Standing: clean Standing (90.0%) → adversarial Standing (55.0%)")
    assert headings[1].get_text().startswith("true Running: clean Running (80.0%) → adversarial Walking (70.0%)")
    assert [to_hex(h.get_color()) for h in headings] == ["#000000", CHANGED_COLOR, CHANGED_COLOR]
    # clean and adversarial curves of channel 1 of point 2, mapped back: 0 + v * 5
    clean_line, adv_line = fig.axes[5].get_lines()
    np.testing.assert_allclose(clean_line.get_ydata(), 5.0 * x[2, 1].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(adv_line.get_ydata(), 5.0 * result.x_adv[2, 1].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), -10 + 20 * x[0, 0].double().numpy(),
                               rtol=1e-6)
    assert fig.axes[0].get_ylabel() == "value (original units)"
    assert_png(path, width=round(2.6 * 2 * 120), height=round(1.9 * 3 * 120), min_bytes=2_000)


def test_signal_gallery_from_result_puts_real_successes_first_and_picks_channels(signals) -> None:
    x, result, _ = signals
    fig = signal_gallery_from_result(x, result, class_names=CLASSES, clean_pred=[0, 1, 2],
                                     clean_conf=[0.9, 0.8, 0.7], y=[0, 1, 2], channels=[1], n=3)
    assert len(fig.axes) == 3 and [ax.get_title() for ax in fig.axes] == ["channel 1"] * 3
    headings = [sub._suptitle.get_text() for sub in fig.subfigs]
    assert "clean Running" in headings[0] and "clean Walking" in headings[1] and "clean Standing" in headings[2]
    assert fig._suptitle.get_text() == "PGD (linf, ε=0.1)"
    # without scaling the curves are the values as given
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), x[1, 1].double().numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.rand(2, 1, 4, 4)}, r"signals \(B, C, T\).*for images use gallery"),
        ({"channel_names": ("a",)}, "1 names for 2 channels"),
        ({"channels": [2]}, r"indices in \[0, 1\]"),
        ({"n": 0}, "positive integer"),
        ({"clean_conf": [0.5]}, "clean_conf has 1 entries, need at least 3"),
    ],
)
def test_signal_gallery_errors(signals, kwargs: dict, message: str) -> None:
    x, result, _ = signals
    args = dict(x=x, x_adv=result.x_adv, class_names=CLASSES, clean_pred=[0, 1, 2], clean_conf=[0.9, 0.8, 0.7],
                adv_pred=result.pred, adv_conf=result.confidence, n=3)
    args.update(kwargs)
    if "x" in kwargs:
        args["x_adv"] = kwargs["x"]
    with pytest.raises(ValueError, match=message):
        signal_gallery(**args)
    with pytest.raises(ValueError, match="too many panels"):
        signal_gallery(torch.rand(1, 9, 5), torch.rand(1, 9, 5), class_names=None, clean_pred=[0], clean_conf=[1.0],
                       adv_pred=[0], adv_conf=[1.0])


@pytest.fixture()
def table() -> tuple[torch.Tensor, torch.Tensor, FeatureScaling]:
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.4, 0.6, 0.8]])
    x_adv = torch.tensor([[0.6, 0.5, 0.45, 0.5], [0.2, 0.4, 0.6, 0.8]])
    return x, x_adv, FeatureScaling(low=(100.0, 0.0, -1.0, 0.0), high=(300.0, 1.0, 1.0, 10.0), fitted_on="train split")


def test_changed_features_in_original_units_largest_change_first(tmp_path, table) -> None:
    x, x_adv, scaling = table
    text = changed_features_table(x, x_adv, feature_names=["area", "smooth|ness", "texture", "radius"],
                                  scaling=scaling, class_names=["malignant", "benign"], clean_pred=[1, 0],
                                  clean_conf=[0.97, 0.9], adv_pred=[0, 0], adv_conf=[0.6, 0.9],
                                  path_md=tmp_path / "c.md", path_csv=tmp_path / "c.csv")
    assert (tmp_path / "c.md").read_text(encoding="utf-8") == text
    lines = text.splitlines()
    assert lines[0] == ("### Point 0, clean benign (97.0%) → adversarial malignant (60.0%) (class changed): "
                        "2 of 4 features changed")
    # area: 100 + 0.5 * 200 = 200 -> 100 + 0.6 * 200 = 220; texture: -1 + 0.5 * 2 = 0 -> -0.1
    assert lines[4] == "| area | 200 | 220 | +20 | +10.0% |"
    assert lines[5] == "| texture | 0 | -0.1 | -0.1 | -5.0% |"
    assert "smooth" not in text  # unchanged features are left out
    assert "### Point 1, clean malignant (90.0%) → adversarial malignant (90.0%) (class kept): 0 of 4" in text
    assert text.rstrip().endswith("range on the train split.")
    with open(tmp_path / "c.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["feature"] for r in rows] == ["area", "texture"]
    assert float(rows[0]["original"]) == pytest.approx(200.0) and float(rows[0]["change_of_range"]) == pytest.approx(0.1)
    assert rows[0]["clean_class"] == "benign" and rows[0]["adversarial_class"] == "malignant"


def test_changed_features_top_escape_and_no_scaling(table) -> None:
    x, x_adv, _ = table
    text = changed_features_table(x, x_adv, top=1, n=1)
    assert "| feature 0 | 0.5 | 0.6 | +0.1 | +10.0% |" in text and "| … 1 more | | | | |" in text
    assert "### Point 0: 2 of 4 features changed" in text and "Values as given" in text
    escaped = changed_features_table(x, x_adv, feature_names=["a|b", "c", "d", "e"], n=1)
    assert "| a\\|b |" in escaped
    assert "0 of 4" in changed_features_table(x, x_adv, n=1, atol=0.2)  # below the tolerance: unchanged


def test_changed_features_from_result_labels_rows_by_index_successes_first(table) -> None:
    x, x_adv, scaling = table
    # point 0 resisted (nothing changed), point 1 was fooled: the fooled one is shown first, as "Point 1"
    x_adv = torch.stack([x[0], x_adv[0]])
    x = torch.stack([x[0], x[0]])
    result = _result(x, x_adv - x, success=[False, True], pred=[1, 0], conf=[0.9, 0.6])
    text = changed_features_from_result(x, result, scaling=scaling, class_names=["malignant", "benign"],
                                        clean_pred=[1, 1], clean_conf=[0.9, 0.97], y=[1, 1], n=2)
    first, second = text.index("### Point 1, clean benign (97.0%) → adversarial malignant (60.0%)"), text.index(
        "### Point 0, clean benign (90.0%) → adversarial benign (90.0%) (class kept): 0 of 4")
    assert first < second


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.rand(2, 2, 3)}, r"table rows \(B, D\).*signal_gallery"),
        ({"feature_names": ["a"]}, "1 names for 4 features"),
        ({"top": 0}, "top must be a positive integer or None"),
        ({"adv_pred": [0]}, "adv_pred has 1 entries"),
    ],
)
def test_changed_features_errors(table, kwargs: dict, message: str) -> None:
    x, x_adv, _ = table
    args = dict(x=x, x_adv=x_adv)
    args.update(kwargs)
    if "x" in kwargs:
        args["x_adv"] = kwargs["x"]
    with pytest.raises(ValueError, match=message):
        changed_features_table(**args)
