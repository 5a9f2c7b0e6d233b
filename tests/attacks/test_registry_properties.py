"""#11: the contract's invariants as properties, over every attack in the registry, at scale.

For random shapes (batch of 1 included), channels-last memory, float32/float64/bfloat16, norms,
radii, boxes, targeted or not, and a random small model: every output lies in the threat model in
the dtype it is returned in, ``success`` is the criterion on the returned points, nothing given
is changed, and the same generator gives the same result. The number of cases per attack comes
from the hypothesis profile (tests/conftest.py): about 10,000 in all under ``make test``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import ATTACKS, make_attack, random_targets
from advlab.oracle import Oracle

CHEAP = {  # per key: options that keep one call to milliseconds
    "ifgsm": {"steps": 3}, "bim": {"steps": 3}, "pgd": {"steps": 3}, "mifgsm": {"steps": 3},
    "mifgm": {"steps": 3}, "apgdce": {"steps": 3}, "apgddlr": {"steps": 3},
    "apgdt": {"steps": 2, "n_target_classes": 2}, "deepfool": {"steps": 4},
    "cw": {"steps": 5, "binary_search_steps": 2}, "cwl2": {"steps": 5, "binary_search_steps": 2},
    "fmn": {"steps": 5}, "fab": {"steps": 3}, "fabt": {"steps": 2, "n_target_classes": 2}, "lbfgs": {"steps": 3, "binary_search_steps": 2}, "square": {"budget": 30}, "simba": {"budget": 30}, "simbadct": {"budget": 30},
    "simbapixel": {"budget": 30}, "nes": {"budget": 30, "samples": 4}, "hsj": {"budget": 40},
    "hopskipjump": {"budget": 40}, "boundary": {"budget": 40, "steps": 20},
    "jsma": {"gamma": 0.5}, "pgdl0": {"steps": 3},
}
SCALE = {"linf": 0.3, "l2": 2.0, "l1": 8.0}


def _model(c: int, h: int, w: int, classes: int, seed: int, dtype: torch.dtype) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * h * w, classes))
    return m.to(dtype).eval()


@st.composite
def cases(draw, key: str):
    e = ATTACKS[key]
    norm = draw(st.sampled_from(["linf", "l2", "l1"]))
    lo = draw(st.sampled_from([0.0, -1.0]))
    hi = lo + draw(st.sampled_from([1.0, 2.0]))
    options = dict(CHEAP.get(key, {}), bounds=(lo, hi))
    fields = {f.name for f in dataclasses.fields(e.cls)}
    if "norm" in fields and "norm" not in e.fixed:
        options["norm"] = norm
    if getattr(e.cls, "norm", None) == "l0":  # a sparse attack: eps counts changed features
        options["eps"] = draw(st.integers(0, 12))
        if "pixels" in fields:
            options["pixels"] = draw(st.booleans())
    elif e.takes_eps:
        options["eps"] = draw(st.floats(0.01, SCALE[options.get("norm", "linf")]))
    try:
        attack = make_attack(key, **options)
    except ValueError:  # a norm the attack does not support
        assume(False)
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    b, c = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(4, 6)), draw(st.integers(4, 6))
    # APGD-T below 4 classes: the targeted margin; a DLR asked by name needs 4 (targeted)
    classes = draw(st.integers(4 if getattr(attack, "loss", None) == "dlr" and key != "apgdt" else 2, 6))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    x = (lo + (hi - lo) * torch.rand(b, c, h, w, generator=g)).to(dtype)
    if draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (b,), generator=g)
    targeted = e.cls.__name__ not in ("APGDT", "DeepFool", "FABT") and draw(st.booleans())  # untargeted only
    target = random_targets(y, classes, generator=g) if targeted else None
    return attack, _model(c, h, w, classes, seed, dtype), x, y, target, seed


def _victim(key: str, model: nn.Module):
    out = ATTACKS[key].oracle_output
    return model if out is None else Oracle(model, output=out)  # type: ignore[arg-type]


def _config(key: str):
    e = ATTACKS[key]
    options = dict(CHEAP.get(key, {}))
    if e.takes_eps:
        options["eps"] = 1 if getattr(e.cls, "norm", None) == "l0" else 0.1
    return make_attack(key, **options)


def _same(a: str, b: str) -> bool:
    """Whether registry keys ``a`` and ``b`` name one attack: equal configs (with the cheap options
    here), the same oracle output and the same freedom to draw the norm, so equal property cases."""
    ea, eb = ATTACKS[a], ATTACKS[b]
    return (_config(a) == _config(b) and ea.oracle_output == eb.oracle_output
            and ("norm" in ea.fixed) == ("norm" in eb.fixed))


# structural attacks (the tree attack) read an estimator's structure, not a CNN's gradients: their
# own property tests are in test_tree.py
KEYS = sorted(k for k in ATTACKS if not getattr(ATTACKS[k].cls, "structural", False))
# an alias (hsj and hopskipjump, cw and cwl2, bim and ifgsm, simba and simbadct) would draw the
# same cases for the same attack again, 15 s each for the query-based ones: each attack once
DISTINCT = [k for i, k in enumerate(KEYS) if not any(_same(j, k) for j in KEYS[:i])]


def test_every_alias_left_out_is_the_same_attack_as_one_tested():
    left = [k for k in KEYS if k not in DISTINCT]
    for pair in (("hsj", "hopskipjump"), ("cw", "cwl2"), ("bim", "ifgsm"), ("simba", "simbadct")):
        assert sum(k in DISTINCT for k in pair) == 1, pair
    assert len(DISTINCT) >= 20 and not {"simbapixel", "pgd", "mifgsm", "mifgm", "fgm"} - set(DISTINCT)
    for k in left:
        assert any(_same(j, k) for j in DISTINCT), k
    for j in DISTINCT:  # and no two tested keys are the same attack
        assert not any(_same(j, k) for k in DISTINCT if k != j)


@pytest.mark.parametrize("key", DISTINCT)
def test_registry_attack_properties(key):
    @given(cases(key))
    def check(case):
        attack, model, x, y, target, seed = case
        before_x, before_y, before_model = x.clone(), y.clone(), snapshot(model)
        rng = torch.get_rng_state()
        r = attack(_victim(key, model), x, y, target=target, generator=torch.Generator().manual_seed(seed))
        assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
        lo, hi = r.threat.bounds
        assert float(r.x_adv.min()) >= lo and float(r.x_adv.max()) <= hi
        if math.isfinite(r.threat.eps):
            dist = r.threat.norm_of(r.x_adv.double() - x.double())
            d = x[0].numel()
            slack = 0.0 if x.dtype == torch.bfloat16 else 2 * torch.finfo(x.dtype).eps * max(
                abs(lo), abs(hi), r.threat.eps) * {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d), "l0": 0.0}[r.threat.norm]
            assert bool((dist <= r.threat.eps + slack).all()), (float(dist.max()), r.threat.eps)
        with torch.no_grad():
            logits = model(r.x_adv)
        finite = torch.isfinite(logits).all(dim=1)
        pred = logits.argmax(1)
        hit = (pred == target) if target is not None else (pred != y)
        agree = r.success == (hit & finite)
        if not bool(agree.all()):
            # a decision-based attack returns points on the boundary, where the model's argmax
            # may differ between its query's batch and this one by float rounding alone: only
            # there may the recomputation disagree (top two logits within rounding)
            assert ATTACKS[key].access == "labels", (r.success, hit)
            top2 = logits.float().topk(2, dim=1).values
            tie = (top2[:, 0] - top2[:, 1]).abs() <= 1e-4 * logits.float().abs().amax(dim=1).clamp_min(1.0)
            assert bool(tie[~agree].all()), (r.success, hit, top2)
        assert torch.equal(x, before_x) and torch.equal(y, before_y)
        assert_unchanged(model, before_model)
        assert torch.equal(torch.get_rng_state(), rng)
        again = attack(_victim(key, model), x, y, target=target, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(again.x_adv, r.x_adv)

    check()
