"""Score-based black-box attacks: Square Attack, SimBA, NES (advlab.attacks.score)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.fft import dct
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks._base import random_targets
from advlab.attacks.score import NES, SimBA, SquareAttack, dct_matrix, square_p_schedule
from advlab.oracle import Oracle


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _correct(model: nn.Module, digits: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits["x_test"][:n], digits["y_test"][:n]
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok], y[ok]


def _random_attack(rng: np.random.Generator, queries: int):
    kind = rng.integers(0, 6)
    eps = float(rng.choice([0.01, 0.05, 0.1, 0.3, 1.0]))
    if kind == 0:
        return SquareAttack(eps=eps, norm="linf", budget=queries, p_init=float(rng.uniform(0.05, 1.0)),
                            loss=str(rng.choice(["cw", "ce"])), restarts=int(rng.integers(1, 3)),
                            early_stop=bool(rng.integers(0, 2)))
    if kind == 1:
        return SquareAttack(eps=eps * 3, norm="l2", budget=queries, p_init=float(rng.uniform(0.05, 1.0)),
                            loss=str(rng.choice(["cw", "ce"])), restarts=int(rng.integers(1, 3)))
    if kind in (2, 3):
        max_norm = float(rng.choice([math.inf, eps, 3 * eps]))
        return SimBA(basis="dct" if kind == 2 else "pixel", eps=float(rng.uniform(0.05, 0.5)),
                     budget=queries, norm=str(rng.choice(["l2", "linf"])), max_norm=max_norm,
                     order=str(rng.choice(["strided", "random"])))
    return NES(eps=eps, norm="linf" if kind == 4 else "l2", samples=int(rng.choice([2, 4, 10])),
               sigma=float(rng.choice([1e-3, 1e-2])), budget=queries,
               steps=None if rng.integers(0, 2) else int(rng.integers(1, 6)),
               loss=str(rng.choice(["cw", "ce"])))


# -- invariants over random settings ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_threat_model_and_budget_on_random_settings(seed):
    """Every output inside ThreatModel(norm, eps, bounds), every budget respected, every query counted,
    and success / pred are what the model answers on the returned points."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(2, 10)), int(rng.integers(2, 10))
    b, classes = int(rng.integers(1, 9)), int(rng.integers(2, 7))
    lo, hi = [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)][int(rng.integers(0, 3))]
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes)).eval()
    x = torch.empty(b, c, h, w).uniform_(lo, hi)
    y = torch.randint(0, classes, (b,))
    own = int(rng.integers(1, 60))
    budget = None if rng.integers(0, 2) else int(rng.integers(1, 60))
    attack = _random_attack(rng, own)
    # radii and steps in units of the box (on a 0-255 box a radius of 0.05 is below float32's
    # resolution of the inputs, so no projection could meet it)
    scale = {"bounds": (lo, hi)}
    for name in ("eps", "max_norm", "sigma"):
        if hasattr(attack, name) and (hi - lo) > 2:
            scale[name] = getattr(attack, name) * (hi - lo)
    attack = type(attack)(**{**attack.__dict__, **scale})
    targeted = classes > 2 and bool(rng.integers(0, 2))
    target = random_targets(y, classes, generator=_gen(seed)) if targeted else None
    oracle = Oracle(model, output="scores", budget=budget)
    r = attack(oracle, x, y, target=target, generator=_gen(seed))
    assert bool(r.threat.contains(r.x_adv, x).all())
    assert float(r.x_adv.min()) >= lo and float(r.x_adv.max()) <= hi
    eps = attack.max_norm if isinstance(attack, SimBA) else attack.eps
    assert r.threat.eps == pytest.approx(eps) and r.threat.norm == attack.norm and r.threat.bounds == (lo, hi)
    cap = own if budget is None else min(own, budget)
    assert int(r.queries.min()) >= 1 and int(r.queries.max()) <= cap
    assert oracle.total_queries == int(r.queries.sum())          # every query went through the session
    assert torch.equal(r.num_forwards, r.queries) and int(r.num_grads.sum()) == 0
    with torch.no_grad():
        logits = model(r.x_adv)
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4 * logits.abs().amax(1).clamp_min(1)
    assert torch.equal(r.pred[clear], logits.argmax(1)[clear])
    want = r.pred == target if targeted else r.pred != y
    assert torch.equal(r.success, want)
    assert not bool((r.budget_exhausted & r.success).any())
    # a point reported exhausted could not have asked more (NES: not a whole step more)
    step = attack.samples + 1 if isinstance(attack, NES) else 1
    assert bool((cap - r.queries[r.budget_exhausted] < step).all())


@pytest.mark.parametrize("seed", range(12))
def test_oracle_budget_lower_than_the_attacks_is_respected(seed, cnn_model, digits):
    rng = np.random.default_rng(100 + seed)
    n, budget = int(rng.integers(1, 40)), int(rng.integers(1, 80))
    x, y = digits["x_test"][:n], digits["y_test"][:n]
    attack = [SquareAttack(eps=0.05, budget=500), SquareAttack(eps=0.3, norm="l2", budget=500),
              SimBA(basis="dct", eps=0.1, budget=500), SimBA(basis="pixel", eps=0.1, budget=500),
              NES(eps=0.05, samples=6, budget=500)][seed % 5]
    oracle = Oracle(cnn_model, output="scores", budget=budget)
    r = attack(oracle, x, y, generator=_gen(seed))
    assert int(r.queries.max()) <= budget
    assert oracle.total_queries == int(r.queries.sum())
    step = attack.samples + 1 if isinstance(attack, NES) else 1
    # exhausted exactly when not successful and out of queries
    out = (budget - r.queries) < step
    assert torch.equal(r.budget_exhausted, out & ~r.success)
    if not isinstance(attack, NES):
        assert torch.equal(r.success | r.budget_exhausted, torch.ones(n, dtype=torch.bool))


# -- success on the digits CNN -----------------------------------------------------------------------

# (attack, targeted, min success rate, max mean queries per success). Measured on the 192 correctly
# classified points among the first 200 digits test points, generator seed 0:
#   Square L∞ ε=0.2, 300 queries: 98.4%, mean 18.7 (median 11)
#   Square L2 ε=1.0, 300 queries: 88.0%, mean 35.5 (median 17)
#   Square L∞ ε=0.3, 1000 queries, targeted: 96.9%, mean 43.2
#   SimBA pixel ε=0.2, 300 queries: 100%, mean 57.0;  SimBA-DCT: 100%, mean 33.8
#   SimBA-DCT, 1000 queries, targeted: 100%, mean 83.1
#   NES L∞ ε=0.2, 20 samples, σ=0.01, 500 queries: 84.9%, mean 153.5
#   NES L∞ ε=0.2, 2000 queries, targeted: 43.8%, mean 358.5
SUCCESS = [
    (SquareAttack(eps=0.2, budget=300), False, 0.93, 30),
    (SquareAttack(eps=1.0, norm="l2", budget=300), False, 0.80, 55),
    (SquareAttack(eps=0.3, budget=1000), True, 0.90, 70),
    (SimBA(basis="pixel", eps=0.2, budget=300), False, 0.95, 80),
    (SimBA(basis="dct", eps=0.2, budget=300), False, 0.95, 50),
    (SimBA(basis="dct", eps=0.2, budget=1000), True, 0.95, 120),
    (NES(eps=0.2, samples=20, sigma=0.01, budget=500), False, 0.75, 220),
    (NES(eps=0.2, samples=20, sigma=0.01, budget=2000), True, 0.33, 500),
]


@pytest.mark.parametrize("attack, targeted, min_rate, max_queries", SUCCESS,
                         ids=[f"{a.__class__.__name__}-{getattr(a, 'norm', '')}-{getattr(a, 'basis', '')}-{t}"
                              for a, t, _, _ in SUCCESS])
def test_success_on_digits_cnn(attack, targeted, min_rate, max_queries, cnn_model, digits):
    x, y = _correct(cnn_model, digits, 200)
    target = random_targets(y, 10, generator=_gen(1)) if targeted else None
    r = attack(Oracle(cnn_model, output="scores"), x, y, target=target, generator=_gen(0))
    rate = r.success_rate
    assert rate >= min_rate, rate
    assert float(r.queries[r.success].float().mean()) <= max_queries
    with torch.no_grad():
        pred = cnn_model(r.x_adv).argmax(1)
    assert torch.equal(pred, r.pred)
    if targeted:
        assert torch.equal(pred[r.success], target[r.success])
    else:
        assert bool((pred[r.success] != y[r.success]).all())
    if isinstance(attack, SquareAttack):   # early stop: no point paid more than the budget
        assert int(r.queries.max()) <= attack.budget


def test_square_linf_stays_on_the_ball_surface(cnn_model, digits):
    """Every L∞ Square update sets a window to ±ε, so every coordinate is ±ε from x unless clipped."""
    x, y = _correct(cnn_model, digits, 40)
    r = SquareAttack(eps=0.1, budget=200)(Oracle(cnn_model), x, y, generator=_gen(3))
    moved = r.queries > 1
    delta = (r.x_adv - x)[moved]
    at_bound = (r.x_adv[moved] == 0) | (r.x_adv[moved] == 1)
    assert bool((((delta.abs() - 0.1).abs() < 1e-6) | at_bound).all())


def test_simba_finite_ball_and_dct_steps(cnn_model, digits):
    x, y = _correct(cnn_model, digits, 60)
    r = SimBA(basis="dct", eps=0.2, budget=400, norm="l2", max_norm=0.8)(Oracle(cnn_model), x, y)
    assert float(r.norms.max()) <= 0.8 * (1 + 1e-5)
    free = SimBA(basis="dct", eps=0.2, budget=400)(Oracle(cnn_model), x, y)
    assert float(free.norms.max()) > 0.8            # the unconstrained search goes further ...
    assert free.success_rate >= r.success_rate      # ... and succeeds at least as often


def test_nes_queries_are_whole_steps(linear_model, digits):
    x, y = _correct(linear_model, digits, 30)
    attack = NES(eps=0.1, samples=8, sigma=0.01, steps=5, budget=1000)
    r = attack(Oracle(linear_model), x, y, generator=_gen(0))
    assert torch.equal((r.queries - 1) % 9, torch.zeros_like(r.queries))
    assert int(r.queries.max()) <= 1 + 5 * 9
    assert not bool(r.budget_exhausted.any())       # stopped by steps, not by the budget


# -- closed forms ----------------------------------------------------------------------------------


def test_square_schedule_matches_the_paper():
    # 10,000 queries: halve after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    expect = {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 201: 0.1, 501: 0.05, 1001: 0.025,
              2001: 0.0125, 4001: 0.00625, 6001: 0.003125, 8001: 0.0015625, 9999: 0.0015625}
    for it, p in expect.items():
        assert square_p_schedule(0.8, it, 10000) == pytest.approx(p)
    # rescaled to 1,000 queries: iteration i behaves as 10 i
    assert square_p_schedule(0.8, 1, 1000) == 0.8 and square_p_schedule(0.8, 2, 1000) == 0.4
    assert square_p_schedule(0.8, 100, 1000) == pytest.approx(0.05)   # 1000 -> 4 halvings


@pytest.mark.parametrize("n", [1, 2, 7, 8, 28])
def test_dct_matrix_is_orthonormal_and_matches_scipy(n):
    d = dct_matrix(n, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    ref = dct(np.eye(n), axis=0, norm="ortho")           # column i = DCT of e_i = D[:, i]
    assert np.allclose(d.numpy(), ref, atol=1e-12)


def test_simba_dct_directions_are_an_orthonormal_basis_low_frequencies_first():
    attack = SimBA(basis="dct", freq_dims=2, stride=1)
    x = torch.zeros(1, 2, 5, 6)
    order = attack._order(x, 1, _gen(0))[0]
    assert sorted(order.tolist()) == list(range(60))
    q = attack._direction(order, x, dct_matrix(5, dtype=torch.float64).float(),
                          dct_matrix(6, dtype=torch.float64).float()).flatten(1)
    assert torch.allclose(q @ q.T, torch.eye(60), atol=1e-5)
    band = torch.maximum((order % 30) // 6, order % 6)
    assert band[:8].max() < 2                            # the 2x2 lowest frequencies of both channels
    assert torch.equal(band.clamp_min(1), band.clamp_min(1).sort().values)   # then band by band
    rand = SimBA(basis="dct", freq_dims=2, order="random")._order(x, 3, _gen(0))
    assert rand.shape == (3, 8) and int(torch.maximum((rand % 30) // 6, rand % 6).max()) < 2


# -- contract --------------------------------------------------------------------------------------

ALL = [SquareAttack(eps=0.1, budget=60), SquareAttack(eps=0.5, norm="l2", budget=60),
       SimBA(basis="pixel", budget=60), SimBA(basis="dct", budget=60),
       NES(eps=0.1, samples=4, budget=60)]
IDS = ["square-linf", "square-l2", "simba-pixel", "simba-dct", "nes"]


@pytest.mark.parametrize("attack", ALL, ids=IDS)
def test_label_only_oracle_is_refused(attack, linear_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    with pytest.raises(ValueError, match="score-based attack.*output='scores'"):
        attack(Oracle(linear_model, output="label"), x, y)
    with pytest.raises(TypeError, match="not a model"):
        attack(linear_model, x, y)


@pytest.mark.parametrize("attack", ALL, ids=IDS)
def test_nothing_mutated_and_seeded(attack, cnn_model, digits):
    x, y = digits["x_test"][:16], digits["y_test"][:16]
    x0, y0 = x.clone(), y.clone()
    before = snapshot(cnn_model)
    rng = torch.random.get_rng_state()
    a = attack(Oracle(cnn_model), x, y, generator=_gen(5))
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert_unchanged(cnn_model, before)
    b = attack(Oracle(cnn_model), x, y, generator=_gen(5))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert torch.equal(a.success, b.success)
    c = attack(Oracle(cnn_model), x, y)                      # no generator: seeded with 0, repeatable
    d = attack(Oracle(cnn_model), x, y)
    assert torch.equal(c.x_adv, d.x_adv)
    assert torch.equal(torch.random.get_rng_state(), rng)


@pytest.mark.parametrize("attack", ALL, ids=IDS)
def test_already_misclassified_points_cost_one_query(attack, cnn_model, digits):
    x, y = digits["x_test"][:24], digits["y_test"][:24]
    with torch.no_grad():
        pred = cnn_model(x).argmax(1)
    wrong = (pred + 1) % 10                      # labels the model does not predict: all misclassified
    y_mixed = torch.where(torch.arange(24) % 2 == 0, wrong, y)
    r = attack(Oracle(cnn_model), x, y_mixed, generator=_gen(0))
    mis = pred != y_mixed
    assert int(mis.sum()) >= 12
    assert r.queries[mis].tolist() == [1] * int(mis.sum())
    assert torch.equal(r.x_adv[mis], x[mis]) and bool((r.norms[mis] == 0).all())
    assert bool(r.success[mis].all()) and torch.equal(r.pred[mis], pred[mis])
    # targeted: points already classified as the target cost one query too
    t = torch.where(torch.arange(24) % 2 == 0, pred, (y + 1) % 10)
    keep = t != y
    rt = attack(Oracle(cnn_model), x[keep], y[keep], target=t[keep], generator=_gen(0))
    hit = pred[keep] == t[keep]
    assert rt.queries[hit].tolist() == [1] * int(hit.sum()) and bool(rt.success[hit].all())


def test_probability_oracle(linear_model, digits):
    """A callable answering probabilities works; confidence is then the answered probability."""
    def proba(z: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(linear_model(z), 1).numpy()

    x, y = _correct(linear_model, digits, 60)
    # measured on these 56 points with probabilities (with logits): 98.2% (100%), 100% (100%),
    # 69.6% (69.6%)
    for attack, rate in ((SquareAttack(eps=0.2, budget=300), 0.9), (SimBA(basis="dct", budget=300), 0.95),
                         (NES(eps=0.2, samples=10, sigma=0.01, budget=400, loss="ce"), 0.6)):
        r = attack(Oracle(proba), x, y)
        assert r.success_rate >= rate, (attack, r.success_rate)
        with torch.no_grad():
            p = torch.softmax(linear_model(r.x_adv), 1)
        assert torch.allclose(r.confidence, p.max(1).values, atol=1e-5)


def test_early_stop_off_spends_the_whole_budget(linear_model, digits):
    x, y = _correct(linear_model, digits, 20)
    on = SquareAttack(eps=0.3, budget=50)(Oracle(linear_model), x, y)
    off = SquareAttack(eps=0.3, budget=50, early_stop=False)(Oracle(linear_model), x, y)
    assert int(on.queries.min()) < 50 and bool((off.queries == 50).all())
    with torch.no_grad():
        m_on = linear_model(on.x_adv).gather(1, y[:, None]).squeeze(1)
        m_off = linear_model(off.x_adv).gather(1, y[:, None]).squeeze(1)
    both = on.success & off.success
    assert bool(both.any())
    assert float(m_off[both].mean()) < float(m_on[both].mean())    # kept lowering the true logit


@pytest.mark.parametrize("make, match", [
    (lambda: SquareAttack(eps=0), "eps must be a finite number > 0"),
    (lambda: SquareAttack(eps=-0.1), "eps must be"),
    (lambda: SquareAttack(eps=math.inf), "eps must be a finite number"),
    (lambda: SquareAttack(eps=0.1, budget=0), "budget .* must be an integer >= 1"),
    (lambda: SquareAttack(eps=0.1, p_init=0.0), r"p_init must be in \(0, 1\]"),
    (lambda: SquareAttack(eps=0.1, p_init=1.5), r"p_init must be in \(0, 1\]"),
    (lambda: SquareAttack(eps=0.1, norm="l1"), "supports norm"),
    (lambda: SquareAttack(eps=0.1, norm="l7"), "unknown norm"),
    (lambda: SquareAttack(eps=0.1, loss="dlr"), "unknown loss"),
    (lambda: SquareAttack(eps=0.1, restarts=0), "restarts"),
    (lambda: SquareAttack(eps=0.1, bounds=(1, 0)), "bounds"),
    (lambda: SimBA(basis="wavelet"), "unknown basis"),
    (lambda: SimBA(eps=0), "eps .* must be a finite number > 0"),
    (lambda: SimBA(max_norm=0), "max_norm must be a number > 0"),
    (lambda: SimBA(budget=0), "budget"),
    (lambda: SimBA(order="diag"), "unknown order"),
    (lambda: SimBA(freq_dims=0), "freq_dims"),
    (lambda: NES(eps=0.1, samples=5), "samples must be even"),
    (lambda: NES(eps=0.1, sigma=0), "sigma"),
    (lambda: NES(eps=0.1, steps=0), "steps"),
    (lambda: NES(eps=0.1, step_size=-1), "step_size"),
    (lambda: NES(eps=0.1, norm="linf2"), "unknown norm"),
])
def test_bad_hyperparameters_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls_are_named(linear_model, cnn_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    # tabular (B, D) inputs: Square draws random feature subsets, SimBA-DCT refuses (no DCT
    # across features), pointing at the pixel basis
    assert SquareAttack(eps=0.1, budget=20)(Oracle(linear_model), x.flatten(1), y).x_adv.shape == (4, 64)
    with pytest.raises(ValueError, match="SquareAttack needs images"):
        SquareAttack(eps=0.1)(Oracle(linear_model), x.flatten(1)[:, None, None, :], y)  # H = 1
    with pytest.raises(ValueError, match="SimBA with the DCT basis needs images.*basis='pixel'"):
        SimBA()(Oracle(linear_model), x.flatten(1), y)
    r = SimBA(basis="pixel", budget=20)(Oracle(linear_model), x.flatten(1), y)   # the pixel basis does not
    assert r.x_adv.shape == (4, 64)
    with pytest.raises(ValueError, match="outside the bounds"):
        SquareAttack(eps=0.1)(Oracle(cnn_model), x * 3, y)
    with pytest.raises(ValueError, match="y contains class 12"):
        NES(eps=0.1)(Oracle(cnn_model), x, torch.tensor([0, 1, 2, 12]))
    with pytest.raises(ValueError, match="target equals the true label"):
        SquareAttack(eps=0.1)(Oracle(cnn_model), x, y, target=y)


@pytest.mark.parametrize("make", [lambda loss: SquareAttack(eps=0.2, budget=40, loss=loss),
                                  lambda loss: NES(eps=0.2, samples=4, budget=40, loss=loss)])
def test_margin_is_a_deprecated_name_of_cw(make, linear_model, digits):
    """The C&W margin is ``loss="cw"`` as everywhere in advlab; ``"margin"`` still works, warns and
    gives the same attack."""
    x, y = digits["x_test"][:8], digits["y_test"][:8]
    with pytest.warns(DeprecationWarning, match="loss='cw'"):
        old = make("margin")
    new = make("cw")
    assert old == new and old.loss == "cw"
    a = old(Oracle(linear_model), x, y, generator=_gen(1))
    b = new(Oracle(linear_model), x, y, generator=_gen(1))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries) and a.attack == b.attack


@pytest.mark.parametrize("cls, kwargs", [(SquareAttack, {"eps": 0.1}), (SimBA, {}), (NES, {"eps": 0.1})])
def test_queries_is_the_deprecated_name_of_budget(cls, kwargs):
    """#10: ``budget`` is what an attack may spend, ``queries`` what it spent. The old keyword
    still works for one release, with a warning, and means the same budget."""
    with pytest.warns(DeprecationWarning, match=r"queries=.*deprecated.*budget="):
        old = cls(queries=77, **kwargs)
    assert old == cls(budget=77, **kwargs) and old.budget == 77
    with pytest.warns(DeprecationWarning, match=r"\.queries is deprecated"):
        assert old.queries == 77
    with pytest.raises(TypeError, match="budget= only"):
        cls(queries=1, budget=2, **kwargs)
    assert dataclasses.replace(old, budget=5).budget == 5   # replace() takes the new name, silently
