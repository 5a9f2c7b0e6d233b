"""Issue #14 item 3: every registry attack on tabular ``(N, D)`` and signal ``(N, C, T)`` inputs,
with per-feature bounds and a mask of frozen features.

For random shapes, per-feature boxes (``lo == hi`` features included), masks, norms and radii:
every output lies inside its feature's bounds, within ε, and equals the input exactly on every
frozen feature; the contract's own check agrees; nothing given is changed; the same generator
gives the same result.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import ATTACKS, make_attack, random_targets
from advlab.oracle import Oracle

CHEAP = {
    "ifgsm": {"steps": 3}, "bim": {"steps": 3}, "pgd": {"steps": 3}, "mifgsm": {"steps": 3},
    "mifgm": {"steps": 3}, "apgdce": {"steps": 3}, "apgddlr": {"steps": 3},
    "apgdt": {"steps": 2, "n_target_classes": 2}, "deepfool": {"steps": 4},
    "cw": {"steps": 5, "binary_search_steps": 2}, "cwl2": {"steps": 5, "binary_search_steps": 2},
    "fmn": {"steps": 5}, "fab": {"steps": 3}, "fabt": {"steps": 2, "n_target_classes": 2},
    "lbfgs": {"steps": 3, "binary_search_steps": 2}, "square": {"budget": 30},
    "simba": {"budget": 30}, "simbadct": {"budget": 30}, "simbapixel": {"budget": 30},
    "nes": {"budget": 30, "samples": 4}, "hsj": {"budget": 40}, "hopskipjump": {"budget": 40},
    "boundary": {"budget": 40, "steps": 20}, "jsma": {"gamma": 0.5}, "pgdl0": {"steps": 3},
}
SCALE = {"linf": 0.3, "l2": 2.0, "l1": 8.0}
#: TreeAttack needs a fitted tree; it is held to the same invariants in tests/attacks/test_tree.py
KEYS = sorted(k for k in ATTACKS if k != "tree")


class Tabular(nn.Module):
    def __init__(self, shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        n = math.prod(shape)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, 8), nn.Tanh(), nn.Linear(8, classes))

    def forward(self, x):
        return self.net(x)


class Signal(nn.Module):
    def __init__(self, c: int, t: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(3 * t, classes))

    def forward(self, x):
        return self.net(x)


def _model(shape: tuple[int, ...], classes: int, seed: int, dtype: torch.dtype) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = Tabular(shape, classes) if len(shape) == 1 else Signal(shape[0], shape[1], classes)
    return m.to(dtype).eval()


@st.composite
def feature_case(draw):
    """A shape of one input, per-feature bounds (some fixed features) and a mask."""
    if draw(st.booleans()):
        shape: tuple[int, ...] = (draw(st.integers(3, 12)),)
    else:
        shape = (draw(st.integers(1, 3)), draw(st.integers(3, 10)))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(-3, 2, shape, generator=g).double() * 0.5        # {-1.5, ..., 0.5}
    width = torch.randint(1, 5, shape, generator=g).double() * 0.5      # {0.5, ..., 2}
    fixed = torch.rand(shape, generator=g) < 0.1                        # lo == hi
    hi = torch.where(fixed, lo, lo + width)
    mask = torch.rand(shape, generator=g) < draw(st.sampled_from([0.5, 0.8, 1.0]))
    mask.view(-1)[int(torch.randint(0, mask.numel(), (1,), generator=g))] = True  # one free at least
    per_channel = len(shape) == 2 and draw(st.booleans())
    if per_channel:  # bounds that broadcast: one range per channel
        lo, hi = lo[:, :1], hi[:, :1].maximum(lo[:, :1] + 0.5)
    return shape, lo, hi, mask, seed


@st.composite
def cases(draw, key: str):
    e = ATTACKS[key]
    shape, lo, hi, mask, seed = draw(feature_case())
    norm = draw(st.sampled_from(["linf", "l2", "l1"]))
    options = dict(CHEAP.get(key, {}), bounds=(lo, hi), mask=mask if draw(st.booleans()) else None)
    fields = {f.name for f in dataclasses.fields(e.cls)}
    if "norm" in fields and "norm" not in e.fixed:
        options["norm"] = norm
    if getattr(e.cls, "norm", None) == "l0":
        options["eps"] = draw(st.integers(0, 6))
    elif e.takes_eps:
        options["eps"] = draw(st.floats(0.01, SCALE[options.get("norm", "linf")]))
    try:
        attack = make_attack(key, **options)
    except ValueError:  # a norm the attack does not support
        assume(False)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    b = draw(st.integers(1, 4))
    classes = draw(st.integers(4, 5))
    g = torch.Generator().manual_seed(seed + 1)
    lo_x, hi_x = lo.expand(shape), hi.expand(shape)
    x = (lo_x + (hi_x - lo_x) * torch.rand(b, *shape, generator=g, dtype=torch.float64)).to(dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    targeted = e.cls.__name__ not in ("APGDT", "DeepFool", "FABT") and draw(st.booleans())
    target = random_targets(y, classes, generator=g) if targeted else None
    return attack, _model(shape, classes, seed, dtype), x, y, target, seed


def _victim(key: str, model: nn.Module):
    out = ATTACKS[key].oracle_output
    return model if out is None else Oracle(model, output=out)  # type: ignore[arg-type]


def _refuses_shape(key: str, x: torch.Tensor) -> bool:
    """SimBA's DCT basis has no meaning on tabular features: it refuses (N, D) inputs."""
    return key in ("simba", "simbadct") and x.dim() == 2


@pytest.mark.parametrize("key", KEYS)
def test_every_attack_honours_per_feature_bounds_and_masks(key):
    @settings(max_examples=12)
    @given(cases(key))
    def check(case):
        attack, model, x, y, target, seed = case
        before_x, before_model = x.clone(), snapshot(model)
        rng = torch.get_rng_state()
        if _refuses_shape(key, x):
            with pytest.raises(ValueError, match="basis='pixel'"):
                attack(_victim(key, model), x, y, target=target)
            return
        r = attack(_victim(key, model), x, y, target=target, generator=torch.Generator().manual_seed(seed))
        assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
        lo, hi = (b.like(x) for b in attack.bounds)
        assert bool((r.x_adv >= lo).all()) and bool((r.x_adv <= hi).all())
        fixed = (lo == hi).expand_as(x)
        assert torch.equal(r.x_adv[fixed], x[fixed])  # a feature with lo == hi cannot move
        if attack.mask is not None:
            frozen = ~attack.mask.like(x).expand_as(x)
            assert torch.equal(r.x_adv[frozen], x[frozen])  # masked features never change
        if math.isfinite(r.threat.eps):
            dist = r.threat.norm_of(r.x_adv.double() - x.double())
            slack = 4 * torch.finfo(x.dtype).eps * max(2.0, r.threat.eps) * x[0].numel()
            assert bool((dist <= r.threat.eps + slack).all()), (float(dist.max()), r.threat.eps)
        assert bool(r.threat.contains(r.x_adv, x).all())
        assert torch.equal(x, before_x)
        assert_unchanged(model, before_model)
        assert torch.equal(torch.get_rng_state(), rng)
        again = attack(_victim(key, model), x, y, target=target, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(again.x_adv, r.x_adv)

    check()
