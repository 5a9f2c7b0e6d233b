"""FAB and FAB-T (Croce & Hein, ICML 2020): the projection onto a hyperplane inside the box against
a linear-programming / quadratic-programming solver, the exact distance on a linear model in L2,
L∞ and L1, the threat model and the contract on the digits CNN, strength against APGD, the
passes counted, and bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot, linear_two_class
from advlab.attacks import APGD, FAB, FABT, make_attack
from advlab.attacks.fab import project_hyperplane_box
from advlab.threat import lp_norm




# -- the projection -------------------------------------------------------------------------------


def _reference(t: np.ndarray, w: np.ndarray, b: float, norm: str) -> float:
    """The smallest ||δ||_p with w·(t + δ) = b and 0 <= t + δ <= 1, by scipy (LP for L1 and L∞,
    SLSQP for L2)."""
    from scipy.optimize import linprog, minimize

    d = t.size
    lo, hi = -t, 1 - t
    if norm == "l2":
        res = minimize(lambda v: float(v @ v), np.zeros(d), jac=lambda v: 2 * v, method="SLSQP",
                       bounds=list(zip(lo, hi)),
                       constraints=[{"type": "eq", "fun": lambda v: float(w @ (t + v) - b), "jac": lambda v: w}],
                       options={"ftol": 1e-14, "maxiter": 500})
        assert res.success, res.message
        return float(np.sqrt(res.x @ res.x))
    if norm == "l1":  # δ = p - q, p, q >= 0: min Σ p + q
        c = np.ones(2 * d)
        a_eq = np.concatenate([w, -w])[None, :]
        bounds = [(0, max(h, 0)) for h in hi] + [(0, max(-l, 0)) for l in lo]
        res = linprog(c, A_eq=a_eq, b_eq=[b - w @ t], bounds=bounds, method="highs")
        assert res.status == 0, res.message
        return float(res.fun)
    # L∞: min s with -s <= δ_j <= s, variables (δ, s)
    c = np.zeros(d + 1)
    c[-1] = 1
    eye = np.eye(d)
    a_ub = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.concatenate([w, [0.0]])[None, :],
                  b_eq=[b - w @ t], bounds=list(zip(lo, hi)) + [(0, None)], method="highs")
    assert res.status == 0, res.message
    return float(res.fun)


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_the_projection_is_the_smallest_step_onto_the_hyperplane_inside_the_box(norm):
    """Random points, normals (some coordinates zero, some points on the box's faces) and offsets
    the box can reach: the step lands on the hyperplane, stays in the box, and its norm is the
    optimum of the LP/QP solved by scipy. Where the box cannot reach the plane the step is the
    corner that moves w·x furthest towards it."""
    g = torch.Generator().manual_seed(3)
    n, d = 40, 12
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    t[:5, :3] = 0.0
    t[5:10, :3] = 1.0
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[::4, 5] = 0.0
    # the reachable range of w·x over the box; b inside it (reachable) for all but the last 4 rows
    lo_reach, hi_reach = w.clamp(max=0).sum(1), w.clamp(min=0).sum(1)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    b = lo_reach + u * (hi_reach - lo_reach)
    b[-4:] = hi_reach[-4:] + 1.0
    delta = project_hyperplane_box(t, w, b, norm, (0.0, 1.0))
    moved = t + delta
    assert float(moved.min()) >= -1e-12 and float(moved.max()) <= 1 + 1e-12
    ok = slice(0, n - 4)
    torch.testing.assert_close((w * moved).sum(1)[ok], b[ok], atol=1e-9, rtol=1e-9)
    ours = lp_norm(delta, norm)
    for i in range(n - 4):
        ref = _reference(t[i].numpy(), w[i].numpy(), float(b[i]), norm)
        assert float(ours[i]) <= ref * (1 + 1e-6) + 1e-9, (i, float(ours[i]), ref)
        assert float(ours[i]) >= ref * (1 - 1e-4) - 1e-7, (i, float(ours[i]), ref)
    corner = torch.where(w > 0, 1.0 - t, -t)[-4:]
    corner = torch.where(w[-4:] == 0, torch.zeros_like(corner), corner)
    torch.testing.assert_close(delta[-4:], corner)


def test_the_projection_is_batched_and_row_independent():
    g = torch.Generator().manual_seed(4)
    t, w = torch.rand(8, 30, generator=g), torch.randn(8, 30, generator=g)
    b = (w * torch.rand(8, 30, generator=g)).sum(1)
    for norm in ("l2", "linf", "l1"):
        whole = project_hyperplane_box(t, w, b, norm, (0.0, 1.0))
        rows = torch.cat([project_hyperplane_box(t[i:i + 1], w[i:i + 1], b[i:i + 1], norm, (0.0, 1.0))
                          for i in range(8)])
        torch.testing.assert_close(whole, rows)


# -- the closed form on a linear model ------------------------------------------------------------


def _points_at_distance(model: nn.Module, norm: str, n: int = 24):
    """Points at known distances d ∈ [0.02, 0.1] (in ``norm``) from the linear boundary, on both
    sides, whose nearest boundary point lies inside the box."""
    w = (model[1].weight[1] - model[1].weight[0]).detach()
    b = (model[1].bias[1] - model[1].bias[0]).detach()
    g = torch.Generator().manual_seed(1)
    x0 = 0.45 + 0.1 * torch.rand(n, 16, generator=g)
    on_plane = x0 - ((x0 @ w + b) / w.dot(w))[:, None] * w
    d = 0.02 + 0.08 * torch.rand(n, generator=g)
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    if norm == "l2":      # the nearest point is along w
        direction = w / w.norm()
    elif norm == "linf":  # along sign(w): every coordinate moves by d
        direction = w.sign()
    else:                 # along the coordinate of largest |w_j|
        j = int(w.abs().argmax())
        direction = torch.zeros_like(w)
        direction[j] = float(w[j].sign())
    x = on_plane + (side * d)[:, None] * direction
    assert float(on_plane.min()) > 0.1 and float(on_plane.max()) < 0.9   # the foot is well inside
    assert float(x.min()) > 0.0 and float(x.max()) < 1.0
    dual = {"l2": w.norm(), "linf": w.abs().sum(), "l1": w.abs().max()}[norm]
    exact = (x @ w + b).abs() / dual
    torch.testing.assert_close(exact, d)
    return x.view(n, 1, 4, 4), exact


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_on_a_linear_model_the_distance_is_the_exact_minimum(norm):
    """Two classes, f(x) = Wx + b: the smallest change of class in Lp is |w·x + b| / ||w||_q (q the
    dual norm) when the nearest boundary point lies in the box. FAB must come within 1% of it
    (and, its points being adversarial points of the box, never below it)."""
    model = linear_two_class()
    x, exact = _points_at_distance(model, norm)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = FAB(norm=norm, steps=20)(model, x, y)
    assert bool(res.success.all())
    ratio = res.norms / exact
    assert float(ratio.min()) >= 1.0 - 1e-4, ratio
    assert float(ratio.max()) <= 1.01, ratio
    # FAB-T on two classes is the same attack (one difference, z_1 - z_0)
    t = FABT(norm=norm, steps=20)(model, x, y)
    torch.testing.assert_close(t.norms, res.norms)


def test_on_a_linear_model_a_finite_eps_keeps_exactly_the_points_within_it():
    model = linear_two_class()
    x, exact = _points_at_distance(model, "l2")
    with torch.no_grad():
        y = model(x).argmax(1)
    free = FAB(norm="l2", steps=20)(model, x, y)
    eps = float(exact.median())
    res = FAB(norm="l2", steps=20, eps=eps)(model, x, y)
    assert bool(res.threat.contains(res.x_adv, x).all())
    within = free.norms <= eps
    assert 0 < int(within.sum()) < len(y)
    # every point found within ε is kept as it is; a point found just outside may be adversarial
    # once projected onto the ball, but only where the exact distance allows it
    assert bool((res.success | ~within).all()) and bool((exact[res.success] <= eps).all())
    assert torch.equal(res.x_adv[within], free.x_adv[within])
    assert bool((res.norms[~within] <= eps * (1 + 1e-6)).all())


# -- the digits CNN -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xy(digits):
    return digits["x_test"][:100], digits["y_test"][:100]


@pytest.mark.parametrize("attack", [
    FAB(eps=0.1, norm="linf", steps=10, restarts=2),
    FABT(eps=0.4, norm="l2", steps=10, n_target_classes=3, restarts=2),
    FAB(eps=1.0, norm="l1", steps=10, restarts=2),
], ids=["fab-linf", "fabt-l2", "fab-l1"])
def test_on_the_cnn_inside_the_threat_model_changing_nothing_and_deterministic(attack, cnn_model, xy):
    x, y = xy
    before, x0, y0, rng = snapshot(cnn_model), x.clone(), y.clone(), torch.get_rng_state()
    res = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(5))
    assert_unchanged(cnn_model, before)
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(torch.get_rng_state(), rng)
    assert bool(res.threat.contains(res.x_adv, x).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    per_norm = {"linf": 1.0, "l2": 8.0, "l1": 64.0}[attack.norm]  # 1, sqrt(d), d for d = 64
    slack = 2 * torch.finfo(torch.float32).eps * max(1.0, attack.eps) * per_norm  # x + δ rounds once
    assert float(lp_norm(res.x_adv.double() - x.double(), attack.norm).max()) <= attack.eps + slack
    with torch.no_grad():
        pred = cnn_model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert 0.3 <= float(res.success.float().mean()) < 1.0
    again = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again.x_adv, res.x_adv)
    other = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(6))
    # the second run starts at random: another generator, other points (same successes or close)
    assert not torch.equal(other.x_adv, res.x_adv)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.6)])
def test_as_strong_as_apgd_at_a_moderate_eps(norm, eps, cnn_model, digits):
    """The digits CNN, 200 points, 20 steps each: FAB and FAB-T break about as many points as
    APGD-CE (measured: L∞ ε=0.1 APGD 0.565, FAB 0.56, FAB-T 0.56)."""
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    apgd = float(APGD(eps=eps, norm=norm, steps=20)(cnn_model, x, y).success.float().mean())
    fab = float(FAB(eps=eps, norm=norm, steps=20)(cnn_model, x, y).success.float().mean())
    fabt = float(FABT(eps=eps, norm=norm, steps=20)(cnn_model, x, y).success.float().mean())
    assert 0.2 < apgd < 0.95
    assert fab >= apgd - 0.05 and fabt >= apgd - 0.05, (apgd, fab, fabt)


def test_minimal_norms_are_no_larger_than_deepfools(cnn_model, xy):
    from advlab.attacks import DeepFool

    x, y = xy
    fab = FAB(norm="l2", steps=30)(cnn_model, x, y)
    df = DeepFool(norm="l2", steps=50)(cnn_model, x, y)
    both = fab.success & df.success & (fab.norms > 0)
    assert int(both.sum()) >= 80
    assert float(fab.norms[both].median()) <= float(df.norms[both].median())


def test_targeted_fab_reaches_the_given_targets(cnn_model, xy):
    x, y = xy
    target = (y + 3) % 10
    res = FAB(norm="l2", steps=30)(cnn_model, x, y, target=target)
    assert float(res.success.float().mean()) >= 0.9
    assert bool((res.pred[res.success] == target[res.success]).all())
    assert bool((res.num_grads <= 30).all())  # one difference, one backward pass per step


def test_passes_are_counted_per_point(cnn_model, xy):
    """Per step and point: one forward+backward for the linearisation (C − 1 = 9 backward passes
    for untargeted FAB, 1 per target for FAB-T) and one forward pass at the new iterate; the clean
    pass is one more forward. Points misclassified from the start cost the clean pass alone."""
    x, y = xy
    with torch.no_grad():
        wrong = cnn_model(x).argmax(1) != y
    assert bool(wrong.any())
    fab = FAB(norm="linf", steps=4)(cnn_model, x, y)
    assert torch.equal(fab.num_grads, torch.where(wrong, 0, 4 * 9))
    assert torch.equal(fab.num_forwards, torch.where(wrong, 1, 1 + 2 * 4))
    fabt = FABT(norm="linf", steps=4, n_target_classes=3)(cnn_model, x, y)  # eps = inf: every target
    assert torch.equal(fabt.num_grads, torch.where(wrong, 0, 3 * 4))
    assert torch.equal(fabt.num_forwards, torch.where(wrong, 1, 1 + 3 * 2 * 4))
    # with a finite ε later targets run only on the points still robust: fewer passes
    bounded = FABT(norm="linf", steps=4, n_target_classes=3, eps=0.1)(cnn_model, x, y)
    assert bool((bounded.num_grads <= fabt.num_grads).all())
    assert int(bounded.num_grads.sum()) < int(fabt.num_grads.sum())
    early = FAB(norm="linf", steps=4, eps=0.1, early_stop=True)(cnn_model, x, y)
    full = FAB(norm="linf", steps=4, eps=0.1)(cnn_model, x, y)
    assert torch.equal(early.success, full.success)
    assert int(early.num_grads.sum()) < int(full.num_grads.sum())


def test_over_targets_the_closest_point_is_kept(cnn_model, xy):
    """With ε = inf FAB-T runs every target on every point and keeps the closest point: more
    targets never give a larger norm."""
    x, y = xy
    one = FABT(norm="l2", steps=10, n_target_classes=1)(cnn_model, x, y)
    three = FABT(norm="l2", steps=10, n_target_classes=3)(cnn_model, x, y)
    assert bool((three.success | ~one.success).all())
    both = one.success & three.success
    assert bool((three.norms[both] <= one.norms[both] + 1e-6).all())
    assert float(three.norms[both].sum()) < float(one.norms[both].sum())


# -- configuration and misuse ---------------------------------------------------------------------


def test_registry_names_and_frozen_keyword_only_configs():
    assert isinstance(make_attack("fab", eps=0.1), FAB) and isinstance(make_attack("FAB-T", eps=0.1), FABT)
    assert make_attack("fabt", eps=0.1, n_target_classes=4).n_target_classes == 4
    assert FAB(norm="Linf").norm == "linf" and FAB(norm=2).norm == "l2"
    assert FAB.kind == "bounded" and FAB(eps=0.1).threat_model().eps == 0.1
    assert math.isinf(FAB().threat_model().eps)
    with pytest.raises(TypeError):
        FAB(0.1)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAB().steps = 3  # type: ignore[misc]
    for cls in (FAB, FABT):
        doc = cls.__doc__ or ""
        assert "Croce" in doc and "Example" in doc


@pytest.mark.parametrize("make,match", [
    (lambda: FAB(steps=0), "steps"),
    (lambda: FAB(steps=2.5), "steps"),
    (lambda: FAB(restarts=0), "restarts"),
    (lambda: FAB(eta=0.9), "eta"),
    (lambda: FAB(beta=0.0), "beta"),
    (lambda: FAB(beta=1.5), "beta"),
    (lambda: FAB(alpha_max=-0.1), "alpha_max"),
    (lambda: FAB(alpha_max=1.5), "alpha_max"),
    (lambda: FAB(eps=-0.1), "eps"),
    (lambda: FAB(eps=math.nan), "eps"),
    (lambda: FAB(norm="l3"), "norm"),
    (lambda: FABT(n_target_classes=0), "n_target_classes"),
    (lambda: FABT(n_target_classes=True), "n_target_classes"),
    (lambda: FAB(bounds=(1.0, 0.0)), "bounds"),
    (lambda: FAB(early_stop="yes"), "early_stop"),
])
def test_bad_configurations(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls(cnn_model, xy):
    x, y = xy
    with pytest.raises(TypeError, match="eps must be a number"):
        FAB(eps="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="FABT picks its own target"):
        FABT(eps=0.1)(cnn_model, x[:4], y[:4], target=(y[:4] + 1) % 10)
    with pytest.raises(ValueError, match="outside the bounds"):
        FAB(eps=0.1)(cnn_model, x[:4] + 2.0, y[:4])
    from advlab.models import Ensemble

    with pytest.raises(ValueError, match="fused in loss"):
        FAB(eps=0.1)(Ensemble([cnn_model, cnn_model], fusion="loss"), x[:4], y[:4])
