"""RegressionPGD: pushing a regressor's output up, down or by Δ inside the ε-ball.

Invariants over random shapes, norms, ε, goals and bounds (inside the ball and the box; "up" never
lowers the output, "down" never raises it, "delta" never ends farther from Δ than x itself), the
closed form on a linear regressor, the noise baseline, purity, and refusals of bad input.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import PGD, RegressionPGD, RegressionResult, noise_gain
from advlab.evaluation import evaluate
from advlab.threat import ThreatModel, lp_norm, random_direction

D = 8


def _mlp(d: int = D, seed: int = 0, *, squeeze: bool = False, width: int = 16) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(d, width), nn.Tanh(), nn.Linear(width, 1)]
        if squeeze:
            layers.append(nn.Flatten(0))  # (N, 1) -> (N,)
        return nn.Sequential(*layers).eval()


def _x(n: int = 24, d: int = D, seed: int = 1, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * (0.1 + 0.8 * torch.rand(n, d, generator=g))


@pytest.fixture(scope="module")
def regressor() -> nn.Module:
    return _mlp()


# -- invariants over random cases --------------------------------------------------------------------


@st.composite
def cases(draw):
    norm = draw(st.sampled_from(["linf", "l2", "l1"]))
    lo = draw(st.sampled_from([0.0, -1.0]))
    hi = lo + draw(st.sampled_from([1.0, 2.0]))
    eps = draw(st.floats(0.0, {"linf": 0.3, "l2": 1.5, "l1": 4.0}[norm]))
    goal = draw(st.sampled_from(["up", "down", "delta"]))
    delta = draw(st.floats(-0.3, 0.3)) if goal == "delta" else None
    shape = draw(st.sampled_from([(3,), (2, 3), (1, 3, 3)]))
    b = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 1000))
    attack = RegressionPGD(eps=eps, norm=norm, goal=goal, delta=delta, steps=draw(st.integers(1, 6)),
                           random_start=draw(st.booleans()), bounds=(lo, hi),
                           step_size=draw(st.none() | st.floats(0.01, 0.5)))
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(b, *shape, generator=g)
    d = math.prod(shape)
    return attack, _mlp(d, seed, squeeze=draw(st.booleans()), width=4), x, seed


@settings(max_examples=80, deadline=None)
@given(cases())
def test_every_output_is_in_the_ball_and_box_and_never_worse_than_x(case):
    attack, model, x, seed = case
    x0, before = x.clone(), snapshot(model)
    r = attack(model, x, generator=torch.Generator().manual_seed(seed))
    assert isinstance(r, RegressionResult) and r.x_adv.shape == x.shape
    lo, hi = attack.bounds
    assert float(r.x_adv.min()) >= lo and float(r.x_adv.max()) <= hi
    tm = ThreatModel(norm=attack.norm, eps=attack.eps, bounds=attack.bounds)
    assert bool(tm.contains(r.x_adv, x).all())
    assert torch.allclose(r.norms, lp_norm(r.x_adv - x, attack.norm))
    with torch.no_grad():
        f_adv, f0 = model(r.x_adv).reshape(-1), model(x).reshape(-1)
    assert torch.allclose(r.y_after, f_adv, atol=1e-6) and torch.allclose(r.y_before, f0)
    assert torch.allclose(r.gain, f_adv - f0, atol=1e-6)
    if attack.goal == "up":
        assert bool((r.gain >= 0).all())
    elif attack.goal == "down":
        assert bool((r.gain <= 0).all())
    else:
        assert bool((r.residual.abs() <= abs(attack.delta) + 1e-6).all())
    assert torch.equal(x, x0)
    assert_unchanged(model, before)


# -- the goals on a tiny MLP, and the closed form on a linear regressor --------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.2), ("l1", 0.5)])
def test_up_raises_and_down_lowers_every_prediction(regressor, norm, eps):
    x = _x()
    up = RegressionPGD(eps=eps, norm=norm, goal="up", steps=20)(regressor, x)
    down = RegressionPGD(eps=eps, norm=norm, goal="down", steps=20)(regressor, x)
    assert bool((up.gain > 0).all()) and bool((down.gain < 0).all())
    # the attack uses its budget: the perturbation reaches the sphere (L1's sparse steps need not)
    if norm != "l1":
        assert bool((up.norms > 0.95 * eps).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_regressor_reaches_the_closed_form_optimum(norm):
    # f(x) = w·x + b: the best change in the ball is eps·||w||_1 (L∞) or eps·||w||_2 (L2), where
    # the box does not get in the way (x in the middle, a small eps)
    lin = nn.Linear(D, 1).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(-1.0, 1.5, D)[None])
    x, eps = torch.full((4, D), 0.5), 0.1
    w = lin.weight.detach()[0]
    optimum = eps * (w.abs().sum() if norm == "linf" else w.norm())
    for goal, sign in (("up", 1), ("down", -1)):
        r = RegressionPGD(eps=eps, norm=norm, goal=goal, steps=10, random_start=False)(lin, x)
        assert torch.allclose(r.gain, sign * optimum.expand(4), rtol=1e-4)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.2), ("l1", 0.5)])
@pytest.mark.parametrize("fraction", [0.5, -0.5])
def test_delta_lands_on_the_aimed_change(regressor, norm, eps, fraction):
    x = _x()
    reach = RegressionPGD(eps=eps, norm=norm, goal="up" if fraction > 0 else "down", steps=20)(regressor, x)
    delta = fraction * float(reach.gain.abs().min())  # reachable for every point
    r = RegressionPGD(eps=eps, norm=norm, goal="delta", delta=delta, steps=30)(regressor, x)
    assert float(r.residual.abs().max()) < 1e-3 * abs(delta)
    assert r.summary()["mean_abs_residual"] == pytest.approx(float(r.residual.abs().mean()))


def test_attack_gain_is_much_larger_than_noise_of_the_same_norm(regressor):
    x = _x(n=64)
    for norm, eps in (("linf", 0.05), ("l2", 0.2)):
        r = RegressionPGD(eps=eps, norm=norm, goal="up", steps=20)(regressor, x)
        noise = noise_gain(regressor, x, r, trials=16, generator=torch.Generator().manual_seed(3))
        assert noise.shape == (16, 64)
        # a random direction of the same size moves f a little, up as often as down
        assert abs(float(noise.mean())) < 0.3 * float(noise.abs().mean())
        assert float(r.gain.mean()) > 2.5 * float(noise.abs().mean())


def test_random_direction_has_unit_norm_and_noise_gain_uses_the_attack_norms(regressor):
    x = _x(n=16)
    for norm in ("linf", "l2", "l1"):
        u = random_direction(x, norm, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(lp_norm(u, norm), torch.ones(16), atol=1e-5)
    r = RegressionPGD(eps=0.05, goal="up", steps=5)(regressor, x)
    # a zero-norm result has zero noise gain
    zero = RegressionPGD(eps=0.0, goal="up", steps=2)(regressor, x)
    assert torch.equal(noise_gain(regressor, x, zero), torch.zeros(1, 16))
    assert bool((noise_gain(regressor, x, r).abs() > 0).any())


def test_outputs_of_shape_n_and_n_by_1_give_the_same_attack():
    x = _x()
    a = RegressionPGD(eps=0.05, steps=5)
    r1, r2 = a(_mlp(seed=4), x), a(_mlp(seed=4, squeeze=True), x)
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.gain, r2.gain)


# -- the contract ------------------------------------------------------------------------------------


def test_pure_and_deterministic():
    model = _mlp(seed=2)
    model.train()  # a training-mode model: warned, attacked in eval mode, mode restored
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[1].weight.requires_grad_(False)
    x = _x()
    x0, before = x.clone(), snapshot(model)
    rng = torch.get_rng_state()
    a = RegressionPGD(eps=0.1, norm="l2", goal="up", steps=4, random_start=True)
    with pytest.warns(UserWarning, match="training mode"):
        r1 = a(model, x, generator=torch.Generator().manual_seed(5))
    assert_unchanged(model, before)
    assert torch.equal(x, x0) and torch.equal(torch.get_rng_state(), rng)
    assert not x.requires_grad and not r1.x_adv.requires_grad
    model.eval()
    r2 = a(model, x, generator=torch.Generator().manual_seed(5))
    r3 = a(model, x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(r1.x_adv, r2.x_adv)
    assert not torch.equal(r1.x_adv, r3.x_adv)  # the random start comes from the generator
    assert torch.equal(a(model, x).x_adv, a(model, x).x_adv)  # no generator: seeded with 0


def test_inside_inference_mode_it_still_moves(regressor):
    x = _x()
    with torch.inference_mode():
        r = RegressionPGD(eps=0.05, steps=5)(regressor, x)
    assert bool((r.gain > 0).all())


def test_costs_and_summary(regressor):
    r = RegressionPGD(eps=0.05, steps=7)(regressor, _x())
    assert bool((r.num_grads == 7).all()) and bool((r.num_forwards == 9).all())
    s = r.summary()
    assert s["goal"] == "up" and s["eps"] == 0.05 and s["n"] == 24 and s["mean_gain"] > 0
    assert "RegressionPGD(eps=0.05" in r.attack and r.residual is None


def test_config_is_frozen_and_keyword_only():
    a = RegressionPGD(eps=0.1, norm="Linf")
    assert a.norm == "linf"
    with pytest.raises(Exception):
        a.eps = 0.2  # type: ignore[misc]
    with pytest.raises(TypeError):
        RegressionPGD(0.1)  # type: ignore[misc]
    assert "2018" in (RegressionPGD.__doc__ or "") and "Example" in (RegressionPGD.__doc__ or "")


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), "eps must be a number >= 0"),
    (dict(eps=math.inf), "finite eps"),
    (dict(eps=0.1, norm="l0"), "RegressionPGD supports linf, l2, l1"),
    (dict(eps=0.1, goal="sideways"), "unknown goal 'sideways'"),
    (dict(eps=0.1, goal="delta"), "needs delta"),
    (dict(eps=0.1, goal="up", delta=1.0), "drop delta or use goal='delta'"),
    (dict(eps=0.1, goal="delta", delta=math.nan), "delta must be a finite number"),
    (dict(eps=0.1, steps=0), "steps must be an integer >= 1"),
    (dict(eps=0.1, step_size=-1.0), "step_size"),
    (dict(eps=0.1, bounds=(1.0, 0.0)), "lo < hi"),
    (dict(eps=0.1, l1_sparsity=0.0), "l1_sparsity"),
])
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegressionPGD(**kwargs)


def test_a_classifier_with_k_outputs_is_refused_naming_pgd():
    clf = nn.Sequential(nn.Linear(D, 3)).eval()
    with pytest.raises(ValueError, match=r"returned \(24, 3\), 3 outputs per input.*PGD"):
        RegressionPGD(eps=0.1)(clf, _x())


def test_bad_batches_are_refused(regressor):
    a = RegressionPGD(eps=0.1)
    x = _x()
    bad = x.clone()
    bad[3, 2] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf in 1 of 24 inputs"):
        a(regressor, bad)
    with pytest.raises(ValueError, match="batch dimension"):
        a(regressor, x[0])
    with pytest.raises(ValueError, match="the model failed on inputs of shape"):
        a(regressor, torch.rand(4, D + 1))
    with pytest.raises(ValueError, match="outside the bounds"):
        a(regressor, x + 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        a(regressor, x.numpy())
    with pytest.raises(TypeError, match="floating-point"):
        a(regressor, (x > 0.5).long())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        a(lambda t: t.sum(1), x)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        a(regressor, x, generator=0)


def test_models_answering_wrongly_are_refused():
    x = _x()

    class Per(nn.Module):  # one output per *feature*
        def forward(self, t):
            return t * 2

    class Nan(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, 1)

        def forward(self, t):
            return self.lin(t) * math.nan

    class Rows(nn.Module):  # too few rows
        def forward(self, t):
            return t[:1].sum(1)

    with pytest.raises(ValueError, match=r"returned \(24, 8\), 8 outputs per input"):
        RegressionPGD(eps=0.1)(Per().eval(), x)
    with pytest.raises(ValueError, match="NaN or Inf on the clean inputs"):
        RegressionPGD(eps=0.1)(Nan().eval(), x)
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for 24 inputs"):
        RegressionPGD(eps=0.1)(Rows().eval(), x)


def test_a_model_without_input_gradient_warns_and_stays_at_x():
    class Rounded(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, 1)

        def forward(self, t):
            with torch.no_grad():
                return self.lin(t)

    x = _x()
    with pytest.warns(UserWarning, match="does not depend on its input through autograd"):
        r = RegressionPGD(eps=0.1, steps=3, random_start=False)(Rounded().eval(), x)
    assert torch.equal(r.x_adv, x) and bool((r.gain == 0).all())


def test_noise_gain_refuses_inputs_of_another_shape(regressor):
    r = RegressionPGD(eps=0.05, steps=2)(regressor, _x())
    with pytest.raises(ValueError, match="pass the inputs the attack was run on"):
        noise_gain(regressor, _x(n=5), r)
    with pytest.raises(ValueError, match="trials must be an integer >= 1"):
        noise_gain(regressor, _x(), r, trials=0)


def test_evaluate_refuses_a_regression_attack(regressor):
    x = _x()
    with pytest.raises(ValueError, match="attacks a regressor"):
        evaluate(regressor, x, torch.zeros(24, dtype=torch.long), attacks={"reg": RegressionPGD(eps=0.1)},
                 eps=[0.1], progress=False)
    # and a classification attack keeps refusing a regressor's single output clearly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="logits of shape|at least 2 classes"):
            PGD(eps=0.1, steps=1)(regressor, x, torch.zeros(24, dtype=torch.long))
