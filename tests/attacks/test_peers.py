"""Agreement with torchattacks (a test-only dependency) on a trained model, to within 1e-6."""

from __future__ import annotations

import pytest
import torch

from _helpers import require_peer

from advlab.attacks import FGSM, MIFGSM, PGD, random_targets

torchattacks = require_peer("torchattacks")


@pytest.fixture(scope="module")
def batch(digits):
    return digits["x_test"][:300], digits["y_test"][:300]


def _diff(a, b):
    return float((a - b).abs().max())


def test_fgsm_matches_torchattacks(cnn_model, batch):
    x, y = batch
    for eps in (0.05, 0.1, 0.3):
        ref = torchattacks.FGSM(cnn_model, eps=eps)(x, y)
        assert _diff(FGSM(eps=eps)(cnn_model, x, y).x_adv, ref) <= 1e-6


def test_pgd_matches_torchattacks(cnn_model, batch):
    x, y = batch
    ref = torchattacks.PGD(cnn_model, eps=0.1, alpha=0.01, steps=20, random_start=False)(x, y)
    ours = PGD(eps=0.1, norm="linf", steps=20, step_size=0.01, random_start=False)(cnn_model, x, y)
    assert _diff(ours.x_adv, ref) <= 1e-6


def test_targeted_pgd_matches_torchattacks(cnn_model, batch):
    x, y = batch
    t = random_targets(y, 10)
    atk = torchattacks.PGD(cnn_model, eps=0.2, alpha=0.02, steps=15, random_start=False)
    atk.set_mode_targeted_by_label(quiet=True)
    ref = atk(x, t)
    ours = PGD(eps=0.2, steps=15, step_size=0.02, random_start=False)(cnn_model, x, y, target=t)
    assert _diff(ours.x_adv, ref) <= 1e-6


def test_mifgsm_matches_torchattacks(cnn_model, batch):
    x, y = batch
    for decay in (1.0, 0.5):
        ref = torchattacks.MIFGSM(cnn_model, eps=0.1, alpha=0.01, steps=10, decay=decay)(x, y)
        ours = MIFGSM(eps=0.1, steps=10, step_size=0.01, decay=decay)(cnn_model, x, y)
        assert _diff(ours.x_adv, ref) <= 1e-6


def test_ifgsm_matches_torchattacks_bim(cnn_model, batch):
    from advlab.attacks import IFGSM
    x, y = batch
    ref = torchattacks.BIM(cnn_model, eps=0.1, alpha=0.01, steps=10)(x, y)
    ours = IFGSM(eps=0.1, steps=10, step_size=0.01)(cnn_model, x, y)
    assert _diff(ours.x_adv, ref) <= 1e-6
