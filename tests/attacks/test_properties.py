"""Property tests over random shapes, norms, ε and bounds for every gradient attack.

Every output is inside the threat model; the model, the inputs and the global RNG are untouched;
the same generator gives the same result.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import FGSM, IFGSM, MIFGSM, PGD, random_targets


def _model(c: int, h: int, w: int, classes: int, seed: int, bn: bool) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Conv2d(c, 4, 3, padding=1)]
        if bn:
            layers.append(nn.BatchNorm2d(4))
        layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, classes)]
        m = nn.Sequential(*layers)
    if bn:  # give the running statistics non-trivial values
        with torch.no_grad():
            m[1].running_mean.uniform_(-0.1, 0.1)
    return m.eval()


@st.composite
def cases(draw):
    norm = draw(st.sampled_from(["linf", "l2", "l1"]))
    lo = draw(st.sampled_from([0.0, -1.0, -0.5]))
    hi = lo + draw(st.sampled_from([1.0, 2.0, 0.5]))
    scale = {"linf": 0.3, "l2": 2.0, "l1": 8.0}[norm]
    eps = draw(st.floats(0.0, scale))
    b, c = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    h, w = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    classes = draw(st.integers(2, 6))
    steps = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["fgsm", "ifgsm", "pgd", "mifgsm"]))
    kw = dict(eps=eps, norm=norm, bounds=(lo, hi), loss=draw(st.sampled_from(["ce", "cw"])))
    if kind == "fgsm":
        attack = FGSM(**kw)
    elif kind == "ifgsm":
        attack = IFGSM(steps=steps, early_stop=draw(st.booleans()), **kw)
    elif kind == "pgd":
        attack = PGD(steps=steps, restarts=draw(st.integers(1, 2)), early_stop=draw(st.booleans()),
                     step_size=draw(st.none() | st.floats(0.01, 1.0)), **kw)
    else:
        attack = MIFGSM(steps=steps, decay=draw(st.floats(0.0, 2.0)), early_stop=draw(st.booleans()), **kw)
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(b, c, h, w, generator=g)
    y = torch.randint(0, classes, (b,), generator=g)
    target = random_targets(y, classes, generator=g) if draw(st.booleans()) else None
    model = _model(c, h, w, classes, seed, bn=draw(st.booleans()))
    return attack, model, x, y, target, seed


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    # the reported predictions and successes are those of the returned points
    with torch.no_grad():
        pred = model(result.x_adv).argmax(1)
    assert torch.equal(pred, result.pred)
    expected = pred == target if target is not None else pred != y
    assert torch.equal(result.success, expected)
    assert (result.num_grads <= getattr(attack, "steps", 1) * getattr(attack, "restarts", 1)).all()
    # nothing given was changed
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert_unchanged(model, model_before)
    assert torch.equal(torch.get_rng_state(), rng_before)
    # determinism: the same generator seed gives the same points
    again = attack(model, x, y, target=target, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(again.x_adv, result.x_adv)


def test_training_mode_model_is_attacked_in_eval_and_restored(cnn_model, digits):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 64, 10))
    model.train()
    before = snapshot(model)
    x, y = digits["x_test"][:8], digits["y_test"][:8]
    import pytest
    from advlab._checks import AdvlabWarning
    with pytest.warns(AdvlabWarning, match="training mode"):
        r1 = PGD(eps=0.1, steps=3)(model, x, y)
    assert_unchanged(model, before)  # BN running stats untouched, mode still train
    assert model.training
    r2 = PGD(eps=0.1, steps=3)(model.eval(), x, y)  # eval: deterministic, equal to the above
    assert torch.equal(r1.x_adv, r2.x_adv)
