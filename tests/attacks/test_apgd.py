"""APGD / APGD-T (Croce & Hein 2020): the paper's schedule, the threat model, strength against PGD,
DLR's scale invariance, targeted forms, evaluation mode, restarts, EOT and misuse."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab._checks import AdvlabWarning
from advlab.attacks import PGD, random_targets
from advlab.attacks.apgd import APGD, APGDT, checkpoints, eot_evaluate
from advlab.losses import get_loss
from advlab.models import Ensemble


@pytest.fixture(scope="module")
def xy(digits):
    return digits["x_test"][:160], digits["y_test"][:160]


# -- the schedule -----------------------------------------------------------------------------


def test_checkpoints_follow_the_paper():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (steps shrink by 0.03 down to 0.06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9]  # ⌈2.2⌉, ⌈4.1⌉, ⌈5.7⌉, 7, 8, ⌈8.7⌉; 10 is the end
    for n in range(1, 300):
        ws = checkpoints(n)
        assert ws == sorted(set(ws)) and all(0 < w < n for w in ws)
        if n >= 5:
            assert ws[0] == math.ceil(0.22 * n - 1e-9)


def test_first_step_of_two_eps_reaches_the_corner_fgsm_reaches(digits):
    """η⁽⁰⁾ = 2ε: from any start in the L∞ ball, the first step lands on the corner
    clip(x + ε·sign(g)). For a 2-class linear model and the C&W margin, g is constant, that corner
    maximises the (linear) objective over ball ∩ box, and it is FGSM's point."""
    from advlab.attacks import FGSM

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    x = digits["x_test"][:64]
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correctly classified
    for eps in (0.02, 0.1):
        fgsm = FGSM(eps=eps, loss="cw")(model, x, y)
        apgd = APGD(eps=eps, steps=1, loss="cw")(model, x, y)
        assert 0 < int(fgsm.success.sum()) < len(y)
        assert torch.equal(apgd.success, fgsm.success)
        assert torch.allclose(apgd.x_adv[~fgsm.success], fgsm.x_adv[~fgsm.success], atol=1e-6)


class Quadratic(nn.Module):
    """Logits ``[x, 0]`` for a scalar input; with the loss below the objective is ``-(x - c)^2``."""

    def forward(self, t):
        v = t.flatten(1)[:, :1]
        return torch.cat([v, torch.zeros_like(v)], dim=1)


def test_step_size_halving_converges_on_a_concave_objective():
    """A fixed step of 2ε oscillates around the maximiser c; halving η at the checkpoints (and
    restarting from the best point) brings the best point within the final η of c."""
    c = torch.linspace(0.25, 0.75, 16)  # maximisers, inside each ball
    x = torch.full((16, 1, 1, 1), 0.5)
    y = torch.zeros(16, dtype=torch.long)  # logit 0 >= logit 1 = 0: never misclassified

    def neg_sq(logits, y, target):  # maximised at x = c
        return -(logits[:, 0] - c.to(logits)) ** 2

    r = APGD(eps=0.4, steps=100, loss=neg_sq)(Quadratic().eval(), x, y)
    assert not r.success.any()
    err = (r.x_adv.flatten() - c).abs()
    assert float(err.max()) < 0.4 * 2 * 0.4 / 2 ** 5, err  # several halvings happened
    pgd = PGD(eps=0.4, steps=100, step_size=0.8, loss=neg_sq)(Quadratic().eval(), x, y)
    assert float((pgd.x_adv.flatten() - c).abs().max()) > 10 * float(err.max())


# -- properties over random shapes, norms and settings ----------------------------------------


def _model(c: int, h: int, w: int, classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * h * w, classes)).eval()


@st.composite
def cases(draw):
    norm = draw(st.sampled_from(["linf", "l2", "l1"]))
    lo = draw(st.sampled_from([0.0, -1.0]))
    hi = lo + draw(st.sampled_from([1.0, 2.0]))
    eps = draw(st.floats(0.0, {"linf": 0.3, "l2": 2.0, "l1": 6.0}[norm]))
    b, c = draw(st.integers(1, 5)), draw(st.integers(1, 2))
    h, w = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    classes = draw(st.integers(4, 6))
    kw = dict(eps=eps, norm=norm, bounds=(lo, hi), steps=draw(st.integers(1, 8)),
              restarts=draw(st.integers(1, 2)), early_stop=draw(st.booleans()),
              eot_iter=draw(st.integers(1, 2)), rho=draw(st.sampled_from([0.75, 0.3])))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(b, c, h, w, generator=g)
    y = torch.randint(0, classes, (b,), generator=g)
    if draw(st.booleans()):
        attack = APGDT(n_target_classes=draw(st.integers(1, 3)), **kw)
        target = None
    else:
        attack = APGD(loss=draw(st.sampled_from(["ce", "dlr", "cw"])), **kw)
        target = random_targets(y, classes, generator=g) if draw(st.booleans()) else None
    return attack, _model(c, h, w, classes, seed), x, y, target, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_outputs_respect_the_threat_model_and_touch_nothing(case):
    attack, model, x, y, target, seed = case
    x_before, y_before = x.clone(), y.clone()
    model_before = snapshot(model)
    rng_before = torch.get_rng_state()
    result = attack(model, x, y, target=target, generator=torch.Generator().manual_seed(seed))
    tm = result.threat
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert tm.contains(result.x_adv, x).all(), (tm.norm_of(result.x_adv - x), tm.eps)
    assert torch.isfinite(result.x_adv).all()
    assert torch.allclose(result.norms, tm.norm_of(result.x_adv - x))
    with torch.no_grad():
        pred = model(result.x_adv).argmax(1)
    assert torch.equal(pred, result.pred)
    assert torch.equal(result.success, pred == target if target is not None else pred != y)
    runs = attack.restarts * getattr(attack, "n_target_classes", 1)
    assert (result.num_grads <= attack.steps * runs * attack.eot_iter).all()
    assert (result.num_forwards >= result.num_grads).all()
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert_unchanged(model, model_before)
    assert torch.equal(torch.get_rng_state(), rng_before)
    again = attack(model, x, y, target=target, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(again.x_adv, result.x_adv)


def test_training_mode_model_and_grads_are_left_alone(cnn_model, xy):
    x, y = xy[0][:16], xy[1][:16]
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 64, 10)).train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = snapshot(model)
    with pytest.warns(AdvlabWarning, match="training mode"):
        APGDT(eps=0.1, steps=3, n_target_classes=2)(model, x, y)
    assert_unchanged(model, before) and model.training


# -- strength ---------------------------------------------------------------------------------


def test_apgd_ce_at_least_as_strong_as_pgd_on_the_same_budget(cnn_model, digits):
    x, y = digits["x_test"], digits["y_test"]
    for eps in (0.1, 0.15):
        g = torch.Generator().manual_seed(0)
        pgd = PGD(eps=eps, steps=20, early_stop=True)(cnn_model, x, y, generator=g)
        apgd = APGD(eps=eps, steps=20, early_stop=True)(cnn_model, x, y, generator=g)
        assert apgd.num_grads.max() <= 20 and pgd.num_grads.max() <= 20
        robust_pgd, robust_apgd = 1 - pgd.success_rate, 1 - apgd.success_rate
        assert robust_apgd <= robust_pgd + 2 / len(y), (eps, robust_apgd, robust_pgd)


def test_apgd_dlr_breaks_the_model_and_is_scale_invariant(cnn_model, xy):
    x, y = xy

    class Scaled(nn.Module):
        def __init__(self, inner: nn.Module, factor: float) -> None:
            super().__init__()
            self.inner, self.factor = inner, factor

        def forward(self, t):
            return self.factor * self.inner(t)

    scaled = Scaled(cnn_model, 10.0).eval()
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    dlr = APGD(eps=0.15, steps=15, loss="dlr")
    base, big = dlr(cnn_model, x, y, generator=gen()), dlr(scaled, x, y, generator=gen())
    assert base.success_rate > 0.7
    assert torch.equal(base.success, big.success)
    # identical trajectories up to float rounding in the gradient
    same = (base.x_adv - big.x_adv).flatten(1).abs().amax(1) <= 1e-5
    assert same.float().mean() >= 0.97
    # cross-entropy is not invariant: the same construction changes its points, and saturates the
    # softmax of some points to an exactly zero gradient, which the attack reports
    ce = APGD(eps=0.15, steps=15, loss="ce")
    with pytest.warns(AdvlabWarning, match="gradient is exactly zero"):
        ce_big = ce(scaled, x, y, generator=gen()).x_adv
    assert not torch.allclose(ce(cnn_model, x, y, generator=gen()).x_adv, ce_big)


def test_targeted_apgd_reaches_given_targets(cnn_model, xy):
    x, y = xy
    t = random_targets(y, 10, generator=torch.Generator().manual_seed(3))
    for loss in ("ce", "dlr"):
        r = APGD(eps=0.3, steps=20, loss=loss, early_stop=True)(cnn_model, x, y, target=t)
        assert (r.pred == t).float().mean() > 0.85, loss
        assert torch.equal(r.success, r.pred == t) and torch.equal(r.target, t)


def test_apgdt_runs_each_target_on_the_points_still_robust(cnn_model, xy):
    x, y = xy
    steps = 6
    one = APGDT(eps=0.12, steps=steps, n_target_classes=1)(cnn_model, x, y)
    three = APGDT(eps=0.12, steps=steps, n_target_classes=3)(cnn_model, x, y)
    with torch.no_grad():
        wrong = cnn_model(x).argmax(1) != y
    # misclassified points cost no gradient; robust points pay the full budget of every target
    assert (three.num_grads[wrong] == 0).all() and (three.success[wrong]).all()
    assert (three.num_grads[~three.success] == 3 * steps).all()
    assert (one.num_grads[~one.success] == steps).all()
    # more targets break more points (with other random starts, so not a superset point by point)
    assert three.success.sum() > one.success.sum()
    assert three.target is None and torch.equal(three.success, three.pred != y)
    # one target at a time (max_batch=1) or all three at once (rows = 3 × points): same budget per
    # robust point, the same strength up to the random starts
    seq = APGDT(eps=0.12, steps=steps, n_target_classes=3, max_batch=1)(cnn_model, x, y)
    par = APGDT(eps=0.12, steps=steps, n_target_classes=3, max_batch=10_000)(cnn_model, x, y)
    for r in (seq, par):
        assert (r.num_grads[~r.success] == 3 * steps).all()
        assert abs(int(r.success.sum()) - int(three.success.sum())) <= 3


def test_rows_of_grouped_targets_fold_into_points_first_success_first():
    """APGD-T runs several targets at once as rows (point, target), target-major; each point must
    take its first successful row (the earliest target), else its best-objective row."""
    from advlab.attacks.contract import Record

    x = torch.zeros(3, 1, 2, 2)
    state = Record.empty(x)
    state.objective[2] = 0.5  # point 2 already holds a point with objective 0.5 from an earlier group
    points = torch.tensor([0, 1, 2, 0, 1, 2])  # targets j (rows 0-2), then j + 1 (rows 3-5)
    rows = Record.empty(torch.arange(6.0).view(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous())
    rows.success = torch.tensor([False, True, False, True, True, False])
    rows.pred = torch.arange(6)
    rows.objective = torch.tensor([0.1, float("-inf"), 0.4, float("-inf"), float("-inf"), 0.7])
    rows.num_grads = torch.full((6,), 5)
    state.merge_rows(rows, points)
    assert state.success.tolist() == [True, True, False]
    assert state.pred.tolist() == [3, 1, 5]  # point 0: row 3; point 1: row 1, not 4; point 2: best
    assert state.x_adv[:, 0, 0, 0].tolist() == [3.0, 1.0, 5.0]
    assert state.objective.tolist() == pytest.approx([float("-inf"), float("-inf"), 0.7])
    assert state.num_grads.tolist() == [10, 10, 10]
    # a later group whose best is worse leaves point 2 alone
    rows2 = Record.empty(torch.ones(1, 1, 2, 2))
    rows2.objective = torch.tensor([0.6])
    state.merge_rows(rows2, torch.tensor([2]))
    assert state.x_adv[2, 0, 0, 0] == 5.0 and state.objective[2] == pytest.approx(0.7)


def test_early_stop_returns_the_same_points_for_less(cnn_model, xy):
    x, y = xy
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    fixed = APGD(eps=0.1, steps=20)(cnn_model, x, y, generator=g())
    early = APGD(eps=0.1, steps=20, early_stop=True)(cnn_model, x, y, generator=g())
    assert torch.equal(fixed.success, early.success)
    assert torch.allclose(fixed.x_adv, early.x_adv, atol=1e-6)
    assert early.num_grads.sum() < 0.8 * fixed.num_grads.sum()
    assert (fixed.num_grads[fixed.pred != y] <= 20).all()


def test_restarts_only_add_successes(cnn_model, xy):
    x, y = xy
    one = APGD(eps=0.06, steps=8, restarts=1)(cnn_model, x, y)
    three = APGD(eps=0.06, steps=8, restarts=3)(cnn_model, x, y)
    assert bool((three.success | ~one.success).all())
    assert three.num_grads.max() == 24


def test_zero_gradient_is_reported(xy):
    x, y = xy

    class Staircase(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, t):
            return self.lin(torch.round(t * 4).flatten(1) / 4)  # piecewise constant in t

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Staircase().eval()
    with torch.no_grad():
        y = model(x[:8]).argmax(1)  # correctly classified: attacked
    with pytest.warns(AdvlabWarning, match="gradient is exactly zero at the starting point of 8 of 8") as record:
        result = APGD(eps=0.05, steps=2)(model, x[:8], y)
    assert sum("exactly zero" in str(w.message) for w in record) == 1   # warned once, not per step
    assert not bool(result.success.any())        # a zero gradient cannot move the points off their class
    assert bool(result.threat.contains(result.x_adv, x[:8]).all())


# -- expectation over transformation ----------------------------------------------------------


class CyclingNoise(nn.Module):
    """A 'randomised' model whose noise is a deterministic cycle through K fixed input shifts, so
    the expectation over its randomness is the exact mean over the cycle."""

    def __init__(self, inner: nn.Module, shifts: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.shifts = inner, shifts  # shifts: (K, 1, H, W)
        self.calls = 0

    def forward(self, t):
        shift = self.shifts[self.calls % len(self.shifts)]
        self.calls += 1
        return self.inner(t + shift)


class Shifted(nn.Module):
    def __init__(self, inner: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.shift = inner, shift

    def forward(self, t):
        return self.inner(t + self.shift)


@pytest.fixture(scope="module")
def shifts():
    return 0.3 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))


def test_eot_averages_gradients_to_the_expectation(cnn_model, xy, shifts):
    x, y = xy[0][:32], xy[1][:32]
    ce = get_loss("ce")
    exact = torch.stack([eot_evaluate(Shifted(cnn_model, s), x, y, None, ce)[1] for s in shifts]).mean(0)
    errors = {}
    for k in (1, 2, 4):
        noisy = CyclingNoise(cnn_model, shifts)
        _, g, _ = eot_evaluate(noisy, x, y, None, ce, eot_iter=k)
        assert noisy.calls == k
        errors[k] = float((g - exact).norm() / exact.norm())
    assert errors[4] < 1e-5 < errors[2] < errors[1]


def test_apgd_with_eot_equals_apgd_on_the_averaged_objective(cnn_model, xy, shifts):
    """eot_iter = K on the K-cycle model is the same attack as APGD on the ensemble whose loss is
    the mean of the K members' losses (its gradient is the mean gradient, its logits the mean)."""
    x, y = xy[0][:40], xy[1][:40]
    mean_loss = Ensemble([Shifted(cnn_model, s) for s in shifts], fusion="loss").eval()
    a = APGD(eps=0.1, steps=10, eot_iter=4)(CyclingNoise(cnn_model, shifts).eval(), x, y,
                                             generator=torch.Generator().manual_seed(0))
    b = APGD(eps=0.1, steps=10)(mean_loss, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.success, b.success)
    assert (a.x_adv - b.x_adv).flatten(1).abs().amax(1).le(1e-5).float().mean() >= 0.95
    assert (a.num_grads == 4 * b.num_grads).all()
    # a single draw per step follows one member's gradient at a time: another attack
    c = APGD(eps=0.1, steps=10, eot_iter=1)(CyclingNoise(cnn_model, shifts).eval(), x, y,
                                             generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(c.x_adv, b.x_adv, atol=1e-3)


# -- misuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make,match", [
    (lambda: APGD(eps=-0.1), "eps must be"),
    (lambda: APGD(eps=float("inf")), "finite eps"),
    (lambda: APGD(eps=0.1, norm="l3"), "unknown norm"),
    (lambda: APGD(eps=0.1, rho=0.0), "rho"),
    (lambda: APGD(eps=0.1, rho=1.0), "rho"),
    (lambda: APGD(eps=0.1, rho=1.5), "rho"),
    (lambda: APGD(eps=0.1, steps=0), "steps must be"),
    (lambda: APGD(eps=0.1, restarts=0), "restarts must be"),
    (lambda: APGD(eps=0.1, eot_iter=0), "eot_iter must be"),
    (lambda: APGD(eps=0.1, loss="hinge"), "unknown loss"),
    (lambda: APGDT(eps=0.1, n_target_classes=0), "n_target_classes must be"),
    (lambda: APGDT(eps=-1.0), "eps must be"),
    (lambda: APGDT(eps=0.1, steps=0), "steps must be"),
    (lambda: APGDT(eps=0.1, max_batch=0), "max_batch must be"),
])
def test_bad_configurations(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls(cnn_model, xy):
    x, y = xy[0][:8], xy[1][:8]
    with pytest.raises(ValueError, match="picks its own target"):
        APGDT(eps=0.1, steps=2)(cnn_model, x, y, target=(y + 1) % 10)
    with pytest.raises(ValueError, match="outside the bounds"):
        APGD(eps=0.1, steps=2)(cnn_model, x * 255, y)
    with pytest.raises(ValueError, match="target equals the true label"):
        APGD(eps=0.1, steps=2)(cnn_model, x, y, target=y)
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    with pytest.raises(ValueError, match="at least 3 classes"):  # an explicit untargeted DLR
        APGD(eps=0.1, steps=2, loss="dlr")(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval(), x, y % 2)
    one = nn.Sequential(nn.Flatten(), nn.Linear(64, 1)).eval()
    with pytest.raises(ValueError, match="at least 2 classes"):
        APGDT(eps=0.1, steps=2)(one, x, y * 0)
    assert three is not None


@pytest.mark.parametrize("classes", [2, 3])
def test_apgdt_below_four_classes_runs_the_targeted_margin(classes):
    """Reproducer: `advlab evaluate --strong --data breast-cancer` stopped at APGD-T with "the
    targeted DLR loss needs at least 4 classes". Below 4 classes APGD-T now warns and ascends the
    targeted margin, which is DLR-T without its normaliser: the same points as APGDT(loss='cw')."""
    g = torch.Generator().manual_seed(classes)
    model = nn.Linear(6, classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, 6, generator=g))
        model.bias.copy_(-model.weight.sum(1) / 2)  # boundaries through the middle of the box
    x = torch.rand(64, 6, generator=g)
    y = model(x).argmax(1)
    with pytest.warns(UserWarning, match="needs at least 4 classes.*targeted margin"):
        got = APGDT(eps=0.1, steps=20)(model, x, y, generator=torch.Generator().manual_seed(0))
    ref = APGDT(eps=0.1, steps=20, loss="cw")(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got.x_adv, ref.x_adv)
    assert got.success.any() and not got.success.all()  # a real attack, not a no-op
    assert ((got.x_adv - x).abs().amax(dim=1) <= 0.1 + 1e-6).all()
    assert (model(got.x_adv).argmax(1) != y)[got.success].all()


@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_frozen_keyword_only_documented(cls):
    assert all(f.kw_only for f in dataclasses.fields(cls)) and cls.__dataclass_params__.frozen
    with pytest.raises(TypeError):
        cls(0.1)  # type: ignore[misc]
    doc = cls.__doc__ or ""
    assert "Example" in doc and "2020" in doc
