"""ThreatModel with per-feature bounds, a mask of frozen features and categorical features
(issue #14 item 3): geometry properties on tabular ``(N, D)`` and signal ``(N, C, T)`` shapes, value
semantics, and a clear error for each bad input."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.threat import PerFeature, ThreatModel, lp_norm, project_l1_ball

NORMS = ["linf", "l2", "l1", "l0"]


@st.composite
def feature_threats(draw):
    """A threat model with per-feature bounds and (maybe) a mask, points inside its box and far."""
    norm = draw(st.sampled_from(NORMS))
    if draw(st.booleans()):
        example: tuple[int, ...] = (draw(st.integers(1, 12)),)                 # tabular (D,)
    else:
        example = (draw(st.integers(1, 3)), draw(st.integers(1, 9)))           # signal (C, T)
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    lo = -2 + 2 * torch.rand(example, generator=g, dtype=torch.float64)
    hi = lo + torch.where(torch.rand(example, generator=g) < 0.15, torch.zeros(example, dtype=torch.float64),
                          0.1 + 2 * torch.rand(example, generator=g, dtype=torch.float64))
    mask = None
    if draw(st.booleans()):
        mask = torch.rand(example, generator=g) < 0.6
        mask.view(-1)[0] = True
    eps = float(draw(st.integers(0, 6))) if norm == "l0" else draw(st.floats(0.0, 3.0))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    b = draw(st.integers(1, 4))
    x = (lo + (hi - lo) * torch.rand(b, *example, generator=g, dtype=torch.float64)).to(dtype)
    far = x + 3 * torch.randn(x.shape, generator=g, dtype=dtype)
    return ThreatModel(norm=norm, eps=eps, bounds=(lo, hi), mask=mask), x, far, g


def _inside(tm: ThreatModel, p: torch.Tensor, x: torch.Tensor) -> None:
    lo, hi = (b.like(x) for b in tm.bounds)
    assert bool((p >= lo).all()) and bool((p <= hi).all())
    if tm.mask is not None:
        frozen = ~tm.mask.like(x).expand_as(x)
        assert torch.equal(p[frozen], x[frozen])  # masked features never change
    d = x[0].numel()
    slack = 4 * torch.finfo(x.dtype).eps * max(2.0, tm.eps) * d
    assert bool((tm.norm_of(p.double() - x.double()) <= tm.eps + slack).all())
    assert bool(tm.contains(p, x).all())


@settings(max_examples=200, deadline=None)
@given(feature_threats())
def test_projection_lands_in_per_feature_box_ball_and_mask(case):
    tm, x, far, _ = case
    p = tm.project(far, x)
    _inside(tm, p, x)
    assert torch.equal(tm.project(x, x), x)


@settings(max_examples=150, deadline=None)
@given(feature_threats())
def test_random_start_is_inside(case):
    tm, x, _, g = case
    if tm.norm != "l0" and not math.isfinite(tm.eps):
        return
    _inside(tm, tm.random_start(x, generator=g), x)


@settings(max_examples=150, deadline=None)
@given(feature_threats())
def test_ascent_direction_spends_nothing_on_frozen_features(case):
    tm, x, far, _ = case
    grad = far - x
    direction = tm.ascent_direction(grad, x_adv=x)
    if tm.mask is not None:
        frozen = ~tm.mask.like(x).expand_as(x)
        assert bool((direction[frozen] == 0).all())
    if tm.norm == "l2":  # unit norm over the free features
        n = lp_norm(tm.restrict(grad), "l2")
        ok = n > 1e-6
        assert torch.allclose(lp_norm(direction, "l2")[ok], torch.ones_like(n[ok]), atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(feature_threats())
def test_masked_ball_projection_is_the_projection_over_free_features(case):
    """Projecting onto the ball of the free features: the nearest point with zero change on the
    frozen ones (the L2 and L1 balls, before the box)."""
    tm, x, far, _ = case
    if tm.mask is None or tm.norm not in ("l2", "l1"):
        return
    wide = ThreatModel(norm=tm.norm, eps=tm.eps, bounds=(-1e6, 1e6), mask=tm.mask.tensor)
    free = tm.mask.like(x)
    delta = wide.project(far, x) - x
    v = (far - x) * free
    expected = v * torch.clamp(tm.eps / lp_norm(v, "l2").clamp_min(1e-30), max=1.0).view(-1, *[1] * (x.dim() - 1)) \
        if tm.norm == "l2" else project_l1_ball(v, tm.eps)
    assert torch.allclose(delta, expected, atol=1e-4 * max(1.0, tm.eps))


def test_float_bounds_are_the_fast_path_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, generator=g)
    far = x + torch.randn(x.shape, generator=g)
    for norm in ("linf", "l2", "l1"):
        floats = ThreatModel(norm=norm, eps=0.3)
        tensors = ThreatModel(norm=norm, eps=0.3, bounds=(torch.zeros(3, 5), torch.ones(3, 5)))
        assert torch.equal(floats.project(far, x), tensors.project(far, x))
        assert not floats.per_feature and tensors.per_feature


def test_broadcasting_bounds_one_range_per_channel():
    tm = ThreatModel(norm="linf", eps=1.0, bounds=(torch.tensor([[0.0], [-1.0]]), torch.tensor([[1.0], [0.0]])))
    x = torch.tensor([[[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]]])  # (1, 2, 3)
    p = tm.project(x + 2.0, x)
    assert torch.equal(p, torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]))


def test_value_semantics_hash_repr_pickle():
    lo, hi = np.zeros(4), [1.0, 2.0, 3.0, 4.0]          # array-likes are accepted
    a = ThreatModel(norm="l2", eps=1.0, bounds=(lo, hi), mask=torch.tensor([True, False, True, True]))
    b = ThreatModel(norm="l2", eps=1.0, bounds=(torch.zeros(4), torch.tensor(hi)),
                    mask=np.array([True, False, True, True]))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    c = ThreatModel(norm="l2", eps=1.0, bounds=(torch.zeros(4), torch.tensor([1.0, 2.0, 3.0, 5.0])))
    assert a != c
    text = repr(a)
    assert "PerFeature(shape=(4,)" in text and "mask=PerFeature(shape=(4,), 3 of 4 True" in text
    assert len(text) < 400
    assert pickle.loads(pickle.dumps(a)) == a
    # a copy: changing the user's tensor later does not change the threat model
    user = torch.ones(4)
    tm = ThreatModel(bounds=(torch.zeros(4), user))
    user[0] = 9.0
    assert float(tm.bounds[1].tensor[0]) == 1.0


def test_bounds_move_to_the_inputs_dtype_and_device_only_when_used():
    tm = ThreatModel(norm="linf", eps=0.5, bounds=(torch.zeros(3), torch.ones(3)))
    assert tm.bounds[0].tensor.device.type == "cpu"
    x = torch.full((2, 3), 0.5, dtype=torch.float64)
    lo, hi = tm.box(x)
    assert lo.dtype == torch.float64 and lo.shape == (3,)


def test_fixed_features_lo_equal_hi_are_allowed_and_never_move():
    tm = ThreatModel(norm="linf", eps=1.0, bounds=(torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.5])))
    x = torch.tensor([[0.2, 0.5]])
    p = tm.project(torch.tensor([[0.9, 0.9]]), x)
    assert torch.equal(p, torch.tensor([[0.9, 0.5]]))


# -- bad input: each a clear error ---------------------------------------------------------------


@pytest.mark.parametrize("make, error, match", [
    (lambda: ThreatModel(bounds=(torch.zeros(3), torch.ones(4))), ValueError,
     r"lo has shape \(3,\), hi has shape \(4,\)"),
    (lambda: ThreatModel(bounds=(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]))), ValueError,
     r"lo > hi for 1 features, the first is feature 1: lo = 0, hi = -1"),
    (lambda: ThreatModel(bounds=(torch.zeros(2, 3), torch.ones(2, 3) - 2 * (torch.arange(6) == 4).view(2, 3))),
     ValueError, r"feature \(1, 1\)"),
    (lambda: ThreatModel(bounds=(torch.tensor([0.0, math.nan]), torch.ones(2))), ValueError,
     r"bounds \(lo\) must be finite numbers; feature 1 is nan"),
    (lambda: ThreatModel(bounds=(torch.zeros(2), torch.tensor([1.0, math.inf]))), ValueError, "finite"),
    (lambda: ThreatModel(bounds=(torch.zeros(2, dtype=torch.bool), torch.ones(2))), TypeError, "real numbers"),
    (lambda: ThreatModel(bounds=(torch.zeros(2),)), ValueError, "pair"),
    (lambda: ThreatModel(mask=torch.ones(3)), TypeError, "mask must be a bool tensor"),
    (lambda: ThreatModel(mask=torch.zeros(3, dtype=torch.bool)), ValueError, "freezes every feature"),
    (lambda: ThreatModel(categorical=[1, -2]), ValueError, "indices >= 0"),
    (lambda: ThreatModel(categorical="ab"), ValueError, "feature indices"),
    (lambda: ThreatModel(norm="l0", eps=2, pixels=True, mask=torch.ones(3, 2, 2, dtype=torch.bool)),
     ValueError, "pixels=True"),
])
def test_bad_feature_options_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_shapes_that_do_not_fit_the_input_are_named():
    x = torch.rand(2, 3, 4)
    tm = ThreatModel(bounds=(torch.zeros(5), torch.ones(5)))
    with pytest.raises(ValueError, match=r"bounds has shape \(5,\) but one input has shape \(3, 4\)"):
        tm.check_features(x)
    tm = ThreatModel(mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask has shape \(4, 3\) but one input has shape \(3, 4\)"):
        tm.check_features(x)
    ThreatModel(mask=torch.ones(3, 1, dtype=torch.bool)).check_features(x)  # broadcasts: fine


def test_a_free_categorical_feature_is_refused_with_its_index():
    x = torch.rand(2, 6)
    with pytest.raises(ValueError, match=r"feature 3 is categorical \(and 1 more.*PGD changes features "
                                         r"by numeric steps: freeze it with mask="):
        ThreatModel(categorical=[3, 5]).check_features(x, who="PGD")
    mask = torch.ones(6, dtype=torch.bool)
    mask[[3, 5]] = False
    ThreatModel(categorical=[3, 5], mask=mask).check_features(x)  # frozen: fine
    with pytest.raises(ValueError, match=r"feature \(1, 0\) is categorical"):
        ThreatModel(categorical=torch.tensor([[False, False], [True, False]])).check_features(torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="names feature 9, but one input has 6 features"):
        ThreatModel(categorical=[9], mask=mask).check_features(x)


def test_perfeature_is_immutable_in_effect():
    t = torch.tensor([1.0, 2.0])
    p = PerFeature(t)
    got = p.tensor
    got[0] = 5.0
    assert float(p.tensor[0]) == 1.0
