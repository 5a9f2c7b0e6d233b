"""Issue #14 item 3 at the attack level: clear errors for per-feature options that do not fit, and
Square/SimBA succeeding on tabular (N, D) and signal (N, C, T) inputs."""

from __future__ import annotations

import pytest
import torch

from advlab.attacks import PGD, FGSM, HopSkipJump, SimBA, SquareAttack, make_attack
from advlab.oracle import Oracle


def _data(digits, n=40):
    x, y = digits["x_test"][:n], digits["y_test"][:n]
    return x.flatten(1), x.view(n, 8, 8), y  # tabular (N, 64), signal (N, C=8, T=8)


def test_bounds_or_mask_of_the_wrong_shape_are_named_at_call(linear_model, digits):
    tab, _, y = _data(digits, 4)
    with pytest.raises(ValueError, match=r"bounds has shape \(10,\) but one input has shape \(64,\)"):
        PGD(eps=0.1, bounds=(torch.zeros(10), torch.ones(10)))(linear_model, tab, y)
    with pytest.raises(ValueError, match=r"mask has shape \(8,\) but one input has shape \(64,\)"):
        FGSM(eps=0.1, mask=torch.ones(8, dtype=torch.bool))(linear_model, tab, y)
    with pytest.raises(ValueError, match=r"input 0, feature 0 is .*bounds are \[0.5, 1\]"):
        PGD(eps=0.1, bounds=(torch.full((64,), 0.5), torch.ones(64)))(linear_model, tab, y)
    with pytest.raises(ValueError, match=r"lo > hi .* feature 2"):
        PGD(eps=0.1, bounds=(torch.zeros(64), torch.ones(64) - 2 * (torch.arange(64) == 2)))


def test_categorical_features_are_refused_by_every_numeric_attack(linear_model, digits):
    tab, _, y = _data(digits, 4)
    for name in ("pgd", "deepfool", "cw", "fmn", "square", "simbapixel", "hsj"):
        attack = make_attack(name, eps=0.1, categorical=[5], strict=False)
        victim = linear_model if attack.access == "gradients" else Oracle(
            linear_model, output="scores" if attack.access == "scores" else "label")
        with pytest.raises(ValueError, match="feature 5 is categorical"):
            attack(victim, tab, y)
    mask = torch.ones(64, dtype=torch.bool)
    mask[5] = False
    r = PGD(eps=0.1, steps=2, categorical=[5], mask=mask)(linear_model, tab, y)
    assert torch.equal(r.x_adv[:, 5], tab[:, 5])


def test_starting_points_that_change_a_frozen_feature_are_refused(linear_model, digits):
    tab, _, y = _data(digits, 4)
    mask = torch.ones(64, dtype=torch.bool)
    mask[:8] = False
    start = torch.rand_like(tab)
    with pytest.raises(ValueError, match="change features the mask freezes"):
        HopSkipJump(budget=50, mask=mask)(Oracle(linear_model, output="label"), tab, y, starting_points=start)


def test_simba_dct_refuses_tabular_inputs_and_runs_on_signals(linear_model, digits):
    tab, sig, y = _data(digits, 4)
    with pytest.raises(ValueError, match="basis='pixel'"):
        SimBA()(Oracle(linear_model), tab, y)
    r = SimBA(budget=30)(Oracle(linear_model), sig, y)
    assert r.x_adv.shape == sig.shape


def test_square_and_simba_succeed_on_vectors_and_signals(mlp_model, digits):
    """Sanity: on a tiny MLP (digits, correctly classified points) the 1-D Square Attack and
    SimBA break clearly more than none at a moderate ε (measured: see the commit message)."""
    tab, sig, y = _data(digits, 40)
    with torch.no_grad():
        ok = mlp_model(tab).argmax(1) == y
    tab, sig, y = tab[ok][:16], sig[ok][:16], y[ok][:16]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    rates = {}
    for name, x in (("tabular", tab), ("signal", sig)):
        rates[f"square-linf-{name}"] = SquareAttack(eps=0.15, budget=150)(Oracle(mlp_model), x, y, generator=g()).success_rate
        rates[f"square-l2-{name}"] = SquareAttack(eps=1.5, norm="l2", budget=150)(Oracle(mlp_model), x, y, generator=g()).success_rate
        rates[f"simba-pixel-{name}"] = SimBA(basis="pixel", eps=0.5, max_norm=2.0, budget=150)(
            Oracle(mlp_model), x, y, generator=g()).success_rate
    rates["simba-dct-signal"] = SimBA(eps=0.5, max_norm=2.0, budget=150)(Oracle(mlp_model), sig, y, generator=g()).success_rate
    assert all(r >= 0.3 for r in rates.values()), rates


def test_a_masked_search_keeps_succeeding(mlp_model, digits):
    """The search respects the mask (windows of free features only): with half the features
    frozen the attack still breaks points, and never touches a frozen feature."""
    tab, _, y = _data(digits, 40)
    with torch.no_grad():
        ok = mlp_model(tab).argmax(1) == y
    tab, y = tab[ok][:16], y[ok][:16]
    mask = torch.zeros(64, dtype=torch.bool)
    mask[::2] = True
    for attack in (SquareAttack(eps=0.2, budget=150, mask=mask), SimBA(basis="pixel", eps=0.5, budget=150, mask=mask),
                   PGD(eps=0.2, steps=10, mask=mask)):
        victim = mlp_model if attack.access == "gradients" else Oracle(mlp_model)
        r = attack(victim, tab, y, generator=torch.Generator().manual_seed(0))
        assert torch.equal(r.x_adv[:, ~mask], tab[:, ~mask])
        assert r.success_rate >= 0.3, (type(attack).__name__, r.success_rate)


def test_tree_attack_honours_per_feature_bounds_and_the_mask(digits):
    from sklearn.tree import DecisionTreeClassifier

    from advlab.attacks import TreeAttack
    from advlab.models import as_model

    tab, _, y = _data(digits, 30)
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(
        digits["x_train"].flatten(1).numpy(), digits["y_train"].numpy())
    model = as_model(tree, input_shape=(64,))
    lo, hi = torch.zeros(64), torch.ones(64)
    hi[10:20] = tab[:, 10:20].max(0).values  # a narrower box on some features
    mask = torch.ones(64, dtype=torch.bool)
    mask[30:40] = False
    free_run = TreeAttack(norm="linf", bounds=(lo, hi))(model, tab, y)
    r = TreeAttack(norm="linf", bounds=(lo, hi), mask=mask)(model, tab, y)
    assert bool((r.x_adv <= hi).all()) and bool((free_run.x_adv <= hi).all())
    assert torch.equal(r.x_adv[:, ~mask], tab[:, ~mask])
    assert r.success_rate > 0.5
    # the exact attack under a mask can only be as close as without it, never closer
    both = r.success & free_run.success
    assert bool((r.norms[both] >= free_run.norms[both] - 1e-6).all())
