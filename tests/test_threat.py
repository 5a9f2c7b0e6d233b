"""ThreatModel geometry: projection, membership, directions, random starts, validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advlab.threat import ThreatModel, canonical_norm, lp_norm, project_l1_ball

NORMS = ["linf", "l2", "l1"]


@st.composite
def threat_and_points(draw):
    norm = draw(st.sampled_from(NORMS))
    lo = draw(st.floats(-2.0, 1.0))
    hi = lo + draw(st.floats(0.1, 3.0))
    eps = draw(st.floats(0.0, 4.0))
    shape = (draw(st.integers(1, 4)),) + tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(shape, generator=g)
    x_far = x + 3 * torch.randn(shape, generator=g)
    return ThreatModel(norm=norm, eps=eps, bounds=(lo, hi)), x, x_far, g


@settings(max_examples=150, deadline=None)
@given(threat_and_points())
def test_projection_lands_in_ball_and_box(args):
    tm, x, x_far, _ = args
    p = tm.project(x_far, x)
    assert tm.contains(p, x).all()
    # tight: the norm bound holds to float32 precision, not just the loose default tolerance
    assert (tm.norm_of(p - x) <= tm.eps * (1 + 1e-6) + 1e-6).all()


@settings(max_examples=100, deadline=None)
@given(threat_and_points())
def test_projection_is_idempotent_and_keeps_inside_points(args):
    tm, x, x_far, _ = args
    p = tm.project(x_far, x)
    assert torch.allclose(tm.project(p, x), p, atol=1e-5)
    assert torch.equal(tm.project(x, x), x)


@settings(max_examples=100, deadline=None)
@given(threat_and_points())
def test_random_start_is_inside(args):
    tm, x, _, g = args
    start = tm.random_start(x, generator=g)
    assert start.shape == x.shape
    assert tm.contains(start, x).all()


@settings(max_examples=100, deadline=None)
@given(threat_and_points())
def test_ascent_direction_has_unit_norm(args):
    tm, x, x_far, _ = args
    grad = x_far - x
    d = tm.ascent_direction(grad)
    n = lp_norm(d, tm.norm)
    nonzero = lp_norm(grad, "linf") > 0
    assert torch.allclose(n[nonzero], torch.ones_like(n[nonzero]), atol=1e-5)
    # it is an ascent direction: <g, d> >= 0, and for linf/l2 it attains the dual norm
    inner = (grad * d).flatten(1).sum(1)
    assert (inner >= -1e-6).all()
    if tm.norm == "linf":
        assert torch.allclose(inner, lp_norm(grad, "l1"), rtol=1e-5, atol=1e-5)
    if tm.norm == "l2":
        assert torch.allclose(inner, lp_norm(grad, "l2"), rtol=1e-5, atol=1e-5)


def test_l2_direction_of_a_tiny_gradient_is_still_a_unit_vector():
    # A saturated softmax gives input gradients of 1e-20 and less (a confident policy or
    # classifier): the L2 direction used to be g / max(||g||, 1e-12), a step of 1e-8 of the step
    # size, or 0 where ||g||^2 underflowed, while L∞'s sign() moved the full step.
    tm = ThreatModel(norm="l2", eps=1.0)
    grad = torch.tensor([[3e-13, -4e-13], [3e-25, 4e-25], [3e-40, -4e-40], [0.0, 0.0], [3.0, 4.0]])
    d = tm.ascent_direction(grad)
    expected = torch.tensor([[0.6, -0.8], [0.6, 0.8], [0.6, -0.8], [0.0, 0.0], [0.6, 0.8]])
    assert torch.allclose(d, expected, atol=1e-6)
    # ordinary rows keep their bits
    assert torch.equal(d[4], grad[4] / torch.linalg.vector_norm(grad[4]))


def test_fgm_on_a_saturated_model_moves_the_full_eps():
    from torch import nn

    from advlab.attacks import FGSM
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model.bias.zero_()
    model.eval()
    x = torch.tensor([[15.0, 0.0], [22.0, 0.0]])  # logit margins 30 and 44: CE gradients 1e-13, 1e-19
    r = FGSM(eps=0.5, norm="l2", bounds=(-100.0, 100.0))(model, x, torch.tensor([0, 0]))
    assert torch.allclose(r.norms, torch.full((2,), 0.5), atol=1e-6)
    assert torch.allclose(r.x_adv[:, 0], torch.tensor([14.5, 21.5]))


def test_l1_direction_skips_coordinates_pinned_at_the_bounds():
    tm = ThreatModel(norm="l1", eps=1.0)
    x_adv = torch.tensor([[1.0, 0.5, 0.0, 0.5]])
    grad = torch.tensor([[10.0, 1.0, -10.0, -2.0]])  # the two big ones would leave the box
    d = tm.ascent_direction(grad, x_adv=x_adv, l1_sparsity=0.5)
    assert d[0, 0] == 0 and d[0, 2] == 0
    assert torch.allclose(d, torch.tensor([[0.0, 0.5, 0.0, -0.5]]))


def test_l1_projection_matches_the_kkt_conditions():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 50, generator=g) * 3
    w = project_l1_ball(v, 2.0)
    assert torch.allclose(w.abs().sum(1), torch.full((5,), 2.0), atol=1e-5)
    # KKT: w = sign(v) max(|v| - theta, 0) with a single theta per row
    theta = (v.abs() - w.abs())[w != 0].view(-1)
    for i in range(5):
        t = (v[i].abs() - w[i].abs())[w[i] != 0]
        assert torch.allclose(t, t[0].expand_as(t), atol=1e-5)
        assert (v[i].abs()[w[i] == 0] <= t[0] + 1e-5).all()
    assert theta.numel() > 0


def test_linf_projection_is_the_exact_reference_arithmetic():
    x = torch.rand(3, 10)
    x_adv = x + torch.randn(3, 10)
    tm = ThreatModel(norm="linf", eps=0.1)
    ref = torch.clamp(x + torch.clamp(x_adv - x, min=-0.1, max=0.1), min=0, max=1)
    assert torch.equal(tm.project(x_adv, x), ref)


@pytest.mark.parametrize("spelling,expected", [("Linf", "linf"), ("inf", "linf"), (math.inf, "linf"),
                                                ("L2", "l2"), (2, "l2"), ("l1", "l1"), (1, "l1")])
def test_norm_aliases(spelling, expected):
    assert canonical_norm(spelling) == expected
    assert ThreatModel(norm=spelling, eps=0.1).norm == expected


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="l3", eps=0.1), "unknown norm"),
    (dict(norm="linf", eps=-0.1), "eps must be"),
    (dict(norm="linf", eps=float("nan")), "eps must be"),
    (dict(norm="linf", eps=0.1, bounds=(1.0, 0.0)), "lo < hi"),
    (dict(norm="linf", eps=0.1, bounds=(0.0,)), "bounds"),
])
def test_invalid_threat_models_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ThreatModel(**kwargs)


def test_unbounded_threat_model_only_clips_to_the_box():
    tm = ThreatModel(norm="l2", eps=math.inf)
    x = torch.rand(4, 10)
    far = x + 5 * torch.randn(4, 10)
    assert torch.equal(tm.project(far, x), far.clamp(0, 1))
    assert tm.contains(far.clamp(0, 1), x).all()
    with pytest.raises(ValueError, match="finite eps"):
        tm.random_start(x, generator=None)


def test_threat_model_is_immutable():
    tm = ThreatModel(norm="l2", eps=1.0)
    with pytest.raises(AttributeError):
        tm.eps = 2.0  # type: ignore[misc]


def test_contains_allows_float_rounding_in_a_large_box():
    # x + delta in float32 near 255 rounds by ~1.5e-5, far more than rtol * eps for eps = 0.05
    g = torch.Generator().manual_seed(0)
    x = 200 + 55 * torch.rand(64, 3, 8, 8, generator=g)
    for norm, eps in (("linf", 0.05), ("l2", 0.05), ("l1", 0.5)):
        t = ThreatModel(norm=norm, eps=eps, bounds=(0.0, 255.0))
        x_adv = t.project(x + torch.randn(x.shape, generator=g), x)
        assert bool(t.contains(x_adv, x).all()), norm
        # and still rejects a point clearly outside
        assert not bool(t.contains(x_adv + 0.01 * (1 if norm == "linf" else 10), x).all()), norm


def test_a_low_precision_linf_random_start_lies_inside_the_ball():
    """Reproducer (hypothesis, registry property test, APGD at ε = 0.0114 in bfloat16): forming
    x + U[-ε, ε] in bf16 rounded a coordinate past ε, and APGD returned that start as its best
    point ("APGD returned 1 points outside its threat model")."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.rand(64, 1, 4, 4, generator=g).to(dtype)
        tm = ThreatModel(norm="linf", eps=0.011389182894266521)
        start = tm.random_start(x, generator=g)
        assert start.dtype == dtype and bool(tm.contains(start, x).all())


def test_an_empty_batch_is_measured_and_contained():
    """Reproducer (fault injection, evaluate --strong killed then rerun): resuming a cascade checked
    the stored examples of the broken points, none in a batch, and _flat's reshape(0, -1) raised."""
    import torch

    from advlab.threat import ThreatModel

    t = ThreatModel(norm="linf", eps=0.1)
    empty = torch.zeros(0, 1, 8, 8)
    assert t.contains(empty, empty).shape == (0,)
    assert t.norm_of(empty).shape == (0,)
