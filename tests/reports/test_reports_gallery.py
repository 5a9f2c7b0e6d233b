"""gallery / gallery_from_result: panel layout, titles, amplified perturbation, PNG output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _png import assert_png
from conftest import CLASS_NAMES
from matplotlib.colors import to_hex

from advlab.reports import gallery, gallery_from_result
from advlab.reports.gallery import CHANGED_COLOR
from advlab.threat import lp_norm


def _args(images, attack_result, clean):
    return dict(class_names=CLASS_NAMES, clean_pred=clean["pred"], clean_conf=clean["conf"],
                adv_pred=attack_result.pred, adv_conf=attack_result.confidence)


def test_three_panels_per_row_with_class_and_confidence(images, attack_result, clean):
    fig = gallery(images, attack_result.x_adv, n=3, **_args(images, attack_result, clean))
    axes = fig.axes
    assert len(axes) == 9
    titles = [ax.get_title() for ax in axes]
    # column headers on the top row; "class (confidence)", so "3 (96.5%)" cannot read as one number
    assert titles[0] == "clean\nSandal (97.1%)" and titles[2] == "adversarial\nSandal (50.0%)"
    assert titles[3] == "Ankle boot (88.0%)" and titles[5] == "Sneaker (97.1%)"
    assert titles[6] == "Dress (75.5%)" and titles[8] == "T-shirt (60.0%)"
    assert all(t.startswith("perturbation ×") for t in titles[1::3])


def test_adversarial_title_red_only_when_the_class_changed(images, attack_result, clean):
    fig = gallery(images, attack_result.x_adv, n=4, **_args(images, attack_result, clean))
    colors = [to_hex(ax.title.get_color()) for ax in fig.axes[2::3]]
    # clean 5, 9, 3, 9 -> adversarial 5, 7, 0, 9
    assert colors == ["#000000", CHANGED_COLOR, CHANGED_COLOR, "#000000"]
    assert [to_hex(ax.title.get_color()) for ax in fig.axes[0::3]] == ["#000000"] * 4


def test_auto_amplification_fills_the_gray_range(images, attack_result, clean):
    """δ = ±0.1 in [0, 1]: ×5 maps it exactly onto 0.5 ± 0.5, the full range."""
    fig = gallery(images, attack_result.x_adv, n=2, **_args(images, attack_result, clean))
    ax = fig.axes[1]
    assert ax.get_title().splitlines()[0] == "perturbation ×5"
    shown = np.asarray(ax.images[0].get_array())
    delta = (attack_result.x_adv[0, 0] - images[0, 0]).numpy()
    np.testing.assert_allclose(shown, 0.5 + 5 * delta, atol=1e-6)
    assert shown.min() == pytest.approx(0.0, abs=1e-6) and shown.max() == pytest.approx(1.0, abs=1e-6)
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_auto_factor_rounds_down_to_two_significant_digits(images, clean, attack_result):
    x_adv = images.clone()
    x_adv[0, 0, 0, 0] += 0.07  # 0.5 / 0.07 = 7.14... -> ×7.1
    x_adv[1, 0, 3, 3] -= 0.003  # 0.5 / 0.003 = 166.7 -> ×160
    fig = gallery(images, x_adv, n=3, **_args(images, attack_result, clean))
    factors = [ax.get_title().splitlines()[0] for ax in fig.axes[1::3]]
    assert factors == ["perturbation ×7.1", "perturbation ×160", "perturbation ×1"]  # row 3: δ = 0
    shown = np.asarray(fig.axes[1].images[0].get_array())
    assert shown.max() == pytest.approx(0.5 + 7.1 * 0.07, abs=1e-5) and shown.max() <= 1.0


def test_fixed_amplification_and_given_norms_are_written(images, attack_result, clean):
    fig = gallery(images, attack_result.x_adv, n=1, amplify=2, norms=[0.123456], norm="l2",
                  **_args(images, attack_result, clean))
    title = fig.axes[1].get_title()
    assert title.splitlines()[0] == "perturbation ×2"
    assert title.splitlines()[1] == r"$\|\delta\|_{2}$=0.123"
    shown = np.asarray(fig.axes[1].images[0].get_array())
    np.testing.assert_allclose(shown, 0.5 + 2 * (attack_result.x_adv[0, 0] - images[0, 0]).numpy(),
                               atol=1e-6)


def test_norm_is_measured_with_the_threat_module_when_not_given(images, attack_result, clean):
    fig = gallery(images, attack_result.x_adv, n=2, norm="l2", **_args(images, attack_result, clean))
    expected = lp_norm(attack_result.x_adv[:2] - images[:2], "l2")
    assert float(expected[0]) == pytest.approx(0.8, rel=1e-5)  # sqrt(64) * 0.1
    for ax, v in zip(fig.axes[1::3], expected):
        assert ax.get_title().splitlines()[1] == rf"$\|\delta\|_{{2}}$={float(v):.3g}"


def test_true_labels_are_written_under_the_original(images, attack_result, clean):
    fig = gallery(images, attack_result.x_adv, n=2, true_labels=clean["y"],
                  **_args(images, attack_result, clean))
    assert [ax.get_ylabel() for ax in fig.axes[0::3]] == ["true: Sandal", "true: Ankle boot"]


def test_n_is_capped_by_the_batch(images, attack_result, clean):
    fig = gallery(images, attack_result.x_adv, n=10, **_args(images, attack_result, clean))
    assert len(fig.axes) == 12


def test_rgb_images_are_mapped_from_the_bounds(attack_result, clean):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 5, generator=g) * 2 - 1  # bounds (-1, 1)
    x_adv = (x + 0.02).clamp(-1, 1)
    fig = gallery(x, x_adv, bounds=(-1.0, 1.0), n=2, class_names=["cat", "dog"], clean_pred=[0, 1],
                  clean_conf=[0.9, 0.8], adv_pred=[1, 1], adv_conf=[0.6, 0.7])
    shown = np.asarray(fig.axes[0].images[0].get_array())
    assert shown.shape == (6, 5, 3)
    np.testing.assert_allclose(shown, (x[0].permute(1, 2, 0).numpy() + 1) / 2, atol=1e-6)
    assert [ax.get_title() for ax in fig.axes[0::3]] == ["clean\ncat (90.0%)", "dog (80.0%)"]


def test_png_is_written(tmp_path, images, attack_result, clean):
    path = tmp_path / "sub" / "gallery.png"
    fig = gallery(images, attack_result.x_adv, n=2, path=path, **_args(images, attack_result, clean))
    w, h = fig.get_size_inches()
    assert_png(path, width=round(w * 120), height=round(h * 120))


def test_from_result_shows_successes_first(images, attack_result, clean):
    fig = gallery_from_result(images, attack_result, class_names=CLASS_NAMES, clean_pred=clean["pred"],
                              clean_conf=clean["conf"], y=clean["y"], n=3)
    assert len(fig.axes) == 9
    # success = [F, T, T, F] -> points 1, 2, 0
    last = lambda ax: ax.get_title().splitlines()[-1]  # noqa: E731
    assert [last(ax) for ax in fig.axes[0::3]] == ["Ankle boot (88.0%)", "Dress (75.5%)", "Sandal (97.1%)"]
    assert [last(ax) for ax in fig.axes[2::3]] == ["Sneaker (97.1%)", "T-shirt (60.0%)", "Sandal (50.0%)"]
    assert all(ax.get_title().splitlines()[1] == r"$\|\delta\|_{\infty}$=0.1" for ax in fig.axes[1::3])
    assert fig.get_suptitle() == "PGD (linf, ε=0.1)"


def test_from_result_uses_the_threat_bounds(images, attack_result, clean):
    fig = gallery_from_result(images, attack_result, class_names=CLASS_NAMES, clean_pred=clean["pred"],
                              clean_conf=clean["conf"], n=1)
    assert fig.axes[0].images[0].get_clim() == attack_result.threat.bounds


@pytest.mark.parametrize("bad, match", [
    (dict(x_adv=torch.zeros(4, 1, 8, 7)), "same shape"),
    (dict(x=torch.zeros(4, 2, 8, 8), x_adv=torch.zeros(4, 2, 8, 8)), "C = 1 or 3"),
    (dict(adv_pred=torch.tensor([5, 10, 0, 9])), "outside class_names"),
    (dict(amplify=0), "amplify"),
    (dict(n=0), "positive integer"),
    (dict(clean_conf=torch.tensor([0.9])), "clean_conf has 1 entries"),
    (dict(bounds=(1.0, 0.0)), "lo < hi"),
])
def test_bad_input_is_refused(images, attack_result, clean, bad, match):
    kwargs = dict(x=images, x_adv=attack_result.x_adv, **_args(images, attack_result, clean))
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        gallery(kwargs.pop("x"), kwargs.pop("x_adv"), **kwargs)


def test_from_result_puts_real_successes_before_points_wrong_from_the_start(images, attack_result, clean):
    """#11 reproducer: "successes first" counted points the model got wrong before any attack (in
    the demo, 5 of 6 rows on digits). A success must mean "correct, then fooled"."""
    import dataclasses

    y = torch.as_tensor(clean["y"]).clone()
    pred = torch.as_tensor(clean["pred"])
    y[0] = (pred[0] + 1) % 10                      # point 0: wrong before the attack ...
    success = torch.tensor([True, False, True, False])   # ... so its "success" cost nothing
    res = dataclasses.replace(attack_result, success=success)
    fig = gallery_from_result(images, res, class_names=CLASS_NAMES, clean_pred=clean["pred"],
                              clean_conf=clean["conf"], y=y, n=4)
    # order: fooled (2), not fooled (1, 3), wrong from the start (0)
    titles = [ax.get_title().splitlines()[-1] for ax in fig.axes[0::3]]
    expected = [gallery(images[i:i + 1], attack_result.x_adv[i:i + 1], n=1, class_names=CLASS_NAMES,
                        clean_pred=clean["pred"][i:i + 1], clean_conf=clean["conf"][i:i + 1],
                        adv_pred=attack_result.pred[i:i + 1],
                        adv_conf=attack_result.confidence[i:i + 1]).axes[0].get_title().splitlines()[-1]
                for i in (2, 1, 3, 0)]
    assert titles == expected
