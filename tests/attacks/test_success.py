"""Attack strength on a model trained on digits; evaluation mode (early_stop) semantics."""

from __future__ import annotations

import torch

from advlab.attacks import FGSM, IFGSM, MIFGSM, PGD, random_targets


def test_pgd_beats_fgsm(cnn_model, digits):
    x, y = digits["x_test"], digits["y_test"]
    for eps, margin in ((0.05, 0.0), (0.1, 0.02), (0.2, 0.03)):
        fgsm = FGSM(eps=eps)(cnn_model, x, y).success_rate
        pgd = PGD(eps=eps, steps=20)(cnn_model, x, y).success_rate
        assert pgd >= fgsm + margin, (eps, fgsm, pgd)


def test_pgd_l2_and_l1_break_the_model(cnn_model, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    assert PGD(eps=2.0, norm="l2", steps=20)(cnn_model, x, y).success_rate > 0.9
    assert PGD(eps=8.0, norm="l1", steps=40, l1_sparsity=0.1)(cnn_model, x, y).success_rate > 0.8
    # a larger ball never hurts on average
    small = PGD(eps=0.5, norm="l2", steps=20)(cnn_model, x, y).success_rate
    assert small < PGD(eps=2.0, norm="l2", steps=20)(cnn_model, x, y).success_rate


def test_targeted_attacks_reach_their_targets(cnn_model, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    t = random_targets(y, 10, generator=torch.Generator().manual_seed(3))
    for attack in (PGD(eps=0.3, steps=40), MIFGSM(eps=0.3, steps=40), IFGSM(eps=0.3, steps=40)):
        r = attack(cnn_model, x, y, target=t)
        assert (r.pred == t).float().mean() > 0.85, attack
        assert torch.equal(r.success, r.pred == t)


def test_early_stop_finds_every_success_of_the_fixed_budget_for_less(cnn_model, digits):
    """Same trajectories until success: early stopping can only add successes, never lose one."""
    x, y = digits["x_test"], digits["y_test"]
    fixed = PGD(eps=0.15, steps=20, step_size=0.01, random_start=False)(cnn_model, x, y)
    early = PGD(eps=0.15, steps=20, step_size=0.01, random_start=False, early_stop=True)(cnn_model, x, y)
    assert bool((early.success | ~fixed.success).all())
    assert early.num_grads.sum() < 0.7 * fixed.num_grads.sum()
    # points the model already gets wrong cost no gradient at all
    with torch.no_grad():
        wrong = cnn_model(x).argmax(1) != y
    assert wrong.any() and (early.num_grads[wrong] == 0).all()
    # a frozen point is exactly where it first succeeded: it is adversarial
    assert torch.equal(early.pred != y, early.success)


def test_restarts_only_add_successes(cnn_model, digits):
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    one = PGD(eps=0.04, steps=10, restarts=1)(cnn_model, x, y)
    many = PGD(eps=0.04, steps=10, restarts=4)(cnn_model, x, y)
    assert bool((many.success | ~one.success).all())
    assert many.success.sum() >= one.success.sum()
    assert many.num_grads.max() == 40 and (many.num_grads[one.success] == 10).all()


def test_losses_cw_and_dlr_also_break_the_model(cnn_model, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    for loss in ("cw", "dlr"):
        assert PGD(eps=0.2, steps=20, loss=loss)(cnn_model, x, y).success_rate > 0.9
