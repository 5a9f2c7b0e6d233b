"""Closed forms on a linear softmax model, and MI-FGSM with μ = 0 against I-FGSM."""

from __future__ import annotations

import torch

from advlab.attacks import FGM, FGSM, IFGSM, MIFGM, MIFGSM, PGD, random_targets


def _analytic_grad(model, x, y):
    """∇_x CE(Wx + b, y) = W^T (softmax(Wx + b) - e_y) for logits = W flatten(x) + b."""
    lin = model[1]
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
        p[torch.arange(len(y)), y] -= 1
        return (p @ lin.weight).view_as(x)


def test_fgsm_equals_the_analytic_step(linear_model, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    g = _analytic_grad(linear_model, x, y)
    for eps in (0.03, 0.1, 0.3):
        expected = torch.clamp(x + eps * g.sign(), 0, 1)
        got = FGSM(eps=eps)(linear_model, x, y).x_adv
        assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()


def test_fgm_l2_equals_the_analytic_step(linear_model, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    g = _analytic_grad(linear_model, x, y)
    eps = 0.5
    unit = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = torch.clamp(x + eps * unit, 0, 1)
    got = FGM(eps=eps)(linear_model, x, y).x_adv
    assert torch.allclose(got, expected, atol=1e-6)


def test_targeted_fgsm_descends_the_target_loss(linear_model, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    t = random_targets(y, 10)
    g = _analytic_grad(linear_model, x, t)
    expected = torch.clamp(x - 0.1 * g.sign(), 0, 1)
    got = FGSM(eps=0.1)(linear_model, x, y, target=t).x_adv
    assert torch.allclose(got, expected, atol=1e-6)


def test_mifgsm_without_momentum_is_ifgsm(cnn_model, digits):
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        a = MIFGSM(eps=eps, steps=10, decay=0.0, norm=norm)(cnn_model, x, y)
        b = IFGSM(eps=eps, steps=10, norm=norm)(cnn_model, x, y)
        if norm == "linf":
            assert torch.equal(a.x_adv, b.x_adv)
        else:  # g/mean|g| rescales before the L2 normalisation: equal up to rounding
            assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5)
    c = MIFGM(eps=1.0, steps=10, decay=0.0)(cnn_model, x, y)
    assert torch.allclose(c.x_adv, b.x_adv, atol=1e-5)


def test_momentum_changes_the_trajectory(cnn_model, digits):
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    a = MIFGSM(eps=0.1, steps=10, decay=1.0)(cnn_model, x, y)
    b = MIFGSM(eps=0.1, steps=10, decay=0.0)(cnn_model, x, y)
    assert not torch.equal(a.x_adv, b.x_adv)


def test_mifgsm_default_step_is_eps_over_t_and_reaches_the_surface(cnn_model, digits):
    """With α = ε/T and sign steps every coordinate moves by at most ε after T steps."""
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    r = MIFGSM(eps=0.1, steps=10)(cnn_model, x, y)
    moved = (r.x_adv - x).abs()
    assert moved.max() <= 0.1 + 1e-6
    interior = (x > 0.1) & (x < 0.9)  # coordinates the box cannot stop
    # momentum keeps the sign stable, so most interior coordinates travel the whole way
    assert (moved[interior] > 0.1 - 1e-5).float().mean() > 0.5


def test_pgd_without_random_start_and_one_step_is_fgsm_like(linear_model, digits):
    x, y = digits["x_test"][:50], digits["y_test"][:50]
    a = PGD(eps=0.1, steps=1, step_size=0.1, random_start=False)(linear_model, x, y)
    b = FGSM(eps=0.1)(linear_model, x, y)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-7)
