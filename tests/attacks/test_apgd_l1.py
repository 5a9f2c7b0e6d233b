"""L1-APGD (Croce & Hein 2021, "Mind the box"): the exact projection onto L1-ball ∩ box, the
sparse direction with a per-point k, the L1 schedule, and APGD / APGD-T under L1 on the digits
CNN: inside the threat model, nothing touched, deterministic, and at least as strong as PGD-L1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import PGD
from advlab.attacks.apgd import APGD, APGDT, l1_box_point, l1_checkpoints, l1_random_start
from advlab.evaluation.cascade import Cascade, strong_attacks
from advlab.threat import ThreatModel, lp_norm, project_l1_ball, project_l1_ball_box, sparse_l1_direction


def _reference(v: torch.Tensor, x: torch.Tensor, eps: float, lo: float, hi: float) -> torch.Tensor:
    """The projection of one vector by bisection on the threshold λ (no sorting), in float64:
    δ_i = sign(v_i) · clamp(|v_i| − λ, 0, u_i), Σ|δ_i| = eps."""
    v, x = v.double().flatten(), x.double().flatten()
    cap = torch.where(v > 0, hi - x, x - lo).clamp_min(0)
    mag = v.abs()

    def at(lam: float) -> torch.Tensor:
        return torch.minimum((mag - lam).clamp_min(0), cap)

    lam = 0.0
    if float(at(0.0).sum()) > eps:
        a, b = 0.0, float(mag.max())
        for _ in range(200):
            c = (a + b) / 2
            a, b = (c, b) if float(at(c).sum()) > eps else (a, c)
        lam = (a + b) / 2
    return torch.sign(v) * at(lam)


def _random_case(g: torch.Generator, lo: float, hi: float):
    b, d = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 50, (1,), generator=g))
    x = lo + (hi - lo) * torch.rand(b, d, generator=g)
    x[:, : d // 4] = lo  # some coordinates on the box's faces, where the caps are zero
    x[:, d // 4: d // 3] = hi
    v = torch.randn(b, d, generator=g) * float(3 * torch.rand(1, generator=g))
    eps = float(6 * torch.rand(1, generator=g))
    return v, x, eps


@pytest.mark.parametrize("box", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_projection_is_the_nearest_point_of_ball_and_box(box):
    lo, hi = box
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(200):
        v, x, eps = _random_case(g, lo, hi)
        eps *= (hi - lo) / 1.0 if hi > 2 else 1.0
        p = project_l1_ball_box(v, x, eps, lo, hi)
        assert p.dtype == v.dtype and p.shape == v.shape
        # in the ball and the box
        assert bool((lp_norm(p, "l1") <= eps * (1 + 1e-6) + 1e-6).all())
        assert bool(((x + p) >= lo - 1e-6).all() and ((x + p) <= hi + 1e-6).all())
        # equal to the bisection reference
        for i in range(v.shape[0]):
            ref = _reference(v[i], x[i], eps, lo, hi)
            worst = max(worst, float((p[i].double() - ref).abs().max()) / max(1.0, hi - lo))
        # idempotent
        again = project_l1_ball_box(p, x, eps, lo, hi)
        assert float((again - p).abs().max()) <= 1e-6 * max(1.0, hi - lo)
    assert worst <= 1e-5, worst


def test_projection_satisfies_the_kkt_conditions_and_beats_ball_then_clip():
    """With λ the multiplier: every free coordinate (strictly between 0 and its cap) has
    |v_i| − |δ_i| = λ, a zero one has |v_i| <= λ, a capped one |v_i| − u_i >= λ; and no point of
    the set is nearer, in particular not the L1-ball projection clipped to the box."""
    g = torch.Generator().manual_seed(1)
    strictly_nearer = 0
    for _ in range(100):
        v, x, eps = _random_case(g, 0.0, 1.0)
        p = project_l1_ball_box(v, x, eps, 0.0, 1.0).double()
        vd, xd = v.double(), x.double()
        cap = torch.where(vd > 0, 1 - xd, xd).clamp_min(0)
        for i in range(v.shape[0]):
            mag, di, ci = vd[i].abs(), p[i].abs(), cap[i]
            free = (di > 1e-9) & (di < ci - 1e-9)
            on_sphere = float(di.sum()) >= eps - 1e-6
            lam = float((mag - di)[free].mean()) if bool(free.any()) else None
            if lam is not None:
                assert float((mag - di)[free].std(unbiased=False)) <= 1e-6 if free.sum() > 1 else True
                assert on_sphere or lam <= 1e-6  # λ > 0 only when the L1 constraint is active
                assert bool((mag[(di <= 1e-9) & (ci > 1e-9)] <= lam + 1e-6).all())
                assert bool(((mag - ci)[(di >= ci - 1e-9) & (ci > 0)] >= lam - 1e-6).all())
            assert bool((torch.sign(p[i]) * torch.sign(vd[i]) >= 0).all())  # never flips a sign
        # the naive map: project onto the ball, then clip into the box
        naive = (x + project_l1_ball(v, eps)).clamp(0, 1) - x
        d_exact = (p - vd).norm(dim=1)
        d_naive = (naive.double() - vd).norm(dim=1)
        assert bool((d_exact <= d_naive + 1e-6).all())
        strictly_nearer += int((d_exact < d_naive - 1e-4).sum())
    assert strictly_nearer > 20  # clipping after the ball projection is not the projection


def test_points_already_inside_are_returned_unchanged():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 1, 8, 8, generator=g)
    tm = ThreatModel(norm="l1", eps=3.0)
    inside = tm.random_start(x, generator=g) - x  # in the ball and the box
    assert torch.equal(project_l1_ball_box(inside, x, 3.0, 0.0, 1.0), inside)
    assert torch.equal(project_l1_ball_box(torch.zeros_like(x), x, 3.0, 0.0, 1.0), torch.zeros_like(x))
    # eps = 0 maps everything to x
    assert torch.equal(project_l1_ball_box(inside, x, 0.0, 0.0, 1.0), torch.zeros_like(x))
    # a box so small that the clip alone is inside the ball: the projection is the clip
    big = 10 * torch.randn(6, 1, 8, 8, generator=g)
    assert torch.allclose(project_l1_ball_box(big, x, 1e4, 0.0, 1.0), (x + big).clamp(0, 1) - x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_box_point_is_in_the_threat_model_in_its_dtype(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 8, 8, generator=g).to(dtype)
    tm = ThreatModel(norm="l1", eps=2.0, bounds=(0.0, 1.0))
    p = l1_box_point(tm, x + torch.randn(8, 1, 8, 8, generator=g).to(dtype), x)
    assert p.dtype == dtype
    dist = lp_norm(p.double() - x.double(), "l1")
    assert bool((dist <= 2.0 + (1e-12 if dtype == torch.float64 else 0.0)).all()), dist
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    start = l1_random_start(tm, x, generator=torch.Generator().manual_seed(0))
    assert bool(tm.contains(start, x).all())


def test_sparse_direction_moves_exactly_k_coordinates_that_can_move():
    g = torch.Generator().manual_seed(4)
    grad = torch.randn(5, 1, 4, 4, generator=g)
    k = torch.tensor([1, 3, 7, 16, 40])
    dirn = sparse_l1_direction(grad, k)
    nnz = dirn.flatten(1).ne(0).sum(1)
    assert nnz.tolist() == [1, 3, 7, 16, 16]
    assert torch.allclose(dirn.flatten(1).abs().sum(1), torch.ones(5))
    # the moved coordinates are the k largest |g|, in the direction of g
    for i in range(5):
        top = grad[i].flatten().abs().topk(int(nnz[i])).indices
        assert set(dirn[i].flatten().nonzero().squeeze(1).tolist()) == set(top.tolist())
        assert bool((dirn[i] * grad[i] >= 0).all())
    # a coordinate at a bound the step would push past is skipped for the next one
    x = torch.full_like(grad, 0.5)
    flat = grad.flatten(1)
    best = flat.abs().argmax(1)
    xb = x.flatten(1).clone()
    xb[torch.arange(5), best] = torch.where(flat[torch.arange(5), best] > 0, 1.0, 0.0)
    blocked = sparse_l1_direction(grad, torch.ones(5, dtype=torch.long), x_adv=xb.view_as(x), bounds=(0.0, 1.0))
    second = flat.abs().topk(2, dim=1).indices[:, 1]
    assert torch.equal(blocked.flatten(1).abs().argmax(1), second)


def test_l1_schedule_follows_the_reference_code():
    assert l1_checkpoints(100) == list(range(4, 100, 4))
    assert l1_checkpoints(10) == list(range(1, 10))  # ⌊0.4⌋ = 0 -> every iteration
    assert l1_checkpoints(1000) == list(range(40, 1000, 40))
    assert l1_checkpoints(1) == []


# -- the attack on the digits CNN -------------------------------------------------------------


@pytest.fixture(scope="module")
def xy(digits):
    return digits["x_test"], digits["y_test"]


def test_apgd_l1_stays_inside_touches_nothing_and_is_deterministic(cnn_model, xy):
    x, y = xy[0][:120], xy[1][:120]
    before_x, before_model = x.clone(), snapshot(cnn_model)
    rng = torch.get_rng_state()
    attack = APGD(eps=2.0, norm="l1", steps=15)
    r = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(5))
    tm = ThreatModel(norm="l1", eps=2.0, bounds=(0.0, 1.0))
    assert r.threat == tm and bool(tm.contains(r.x_adv, x).all())
    assert float(r.norms.max()) <= 2.0 * (1 + 1e-5)
    assert torch.equal(x, before_x)
    assert_unchanged(cnn_model, before_model)
    assert torch.equal(torch.get_rng_state(), rng)
    again = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again.x_adv, r.x_adv) and torch.equal(again.success, r.success)
    other = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(other.x_adv, r.x_adv)
    with torch.no_grad():
        assert torch.equal(r.success, cnn_model(r.x_adv).argmax(1) != y)
    assert int(r.num_grads.max()) <= 15
    # the attack uses the ball: the points it cannot break sit on the L1 sphere
    robust = ~r.success
    assert bool(robust.any()) and float(r.norms[robust].min()) >= 2.0 * 0.99
    # and it is sparse: the perturbations change few of the 64 pixels
    assert float(r.x_adv[robust].sub(x[robust]).flatten(1).ne(0).sum(1).float().median()) < 32


@pytest.mark.parametrize("eps", [2.0, 3.0])
def test_apgd_l1_at_least_as_strong_as_pgd_l1_on_the_same_budget(cnn_model, xy, eps):
    x, y = xy
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pgd = PGD(eps=eps, norm="l1", steps=20)(cnn_model, x, y, generator=g())
    apgd = APGD(eps=eps, norm="l1", steps=20)(cnn_model, x, y, generator=g())
    assert pgd.num_grads.max() <= 20 and apgd.num_grads.max() <= 20
    robust_pgd, robust_apgd = 1 - pgd.success_rate, 1 - apgd.success_rate
    # measured (397 points): eps 2: PGD-L1 0.244, APGD-L1 0.219; eps 3: 0.043, 0.033
    assert robust_apgd <= robust_pgd, (eps, robust_apgd, robust_pgd)


def test_apgdt_l1_breaks_more_than_apgd_l1(cnn_model, xy):
    x, y = xy
    apgd = APGD(eps=2.0, norm="l1", steps=20)(cnn_model, x, y)
    apgdt = APGDT(eps=2.0, norm="l1", steps=20, n_target_classes=3)(cnn_model, x, y)
    tm = ThreatModel(norm="l1", eps=2.0)
    assert bool(tm.contains(apgdt.x_adv, x).all()) and apgdt.threat.norm == "l1"
    assert int(apgdt.num_grads.max()) <= 3 * 20
    with torch.no_grad():
        assert torch.equal(apgdt.success, cnn_model(apgdt.x_adv).argmax(1) != y)
    assert int(apgdt.success.sum()) >= int(apgd.success.sum())


def test_strong_attacks_under_l1_are_l1_apgd(cnn_model, xy):
    x, y = xy[0][:60], xy[1][:60]
    members = strong_attacks(2.0, "l1", steps=10, n_target_classes=2)
    assert list(members) == ["APGD-CE", "APGD-T"]
    assert isinstance(members["APGD-CE"], APGD) and isinstance(members["APGD-T"], APGDT)
    assert all(a.threat_model().norm == "l1" for a in members.values())
    r = Cascade(members).run(cnn_model, x, y, generator=torch.Generator().manual_seed(0), progress=False)
    ce = members["APGD-CE"](cnn_model, x, y, generator=torch.Generator().manual_seed(0))
    assert r.n_robust <= int((~ce.success).sum())
    assert r.n_robust < r.n_correct


def test_apgd_l1_on_a_box_other_than_the_unit_cube():
    """Bounds (-1, 1) and bfloat16: the returned points are in the ball exactly, in the dtype."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    g = torch.Generator().manual_seed(7)
    x = torch.rand(10, 1, 4, 4, generator=g) * 2 - 1
    y = torch.randint(0, 5, (10,), generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        m = model.to(dtype)
        r = APGDT(eps=1.5, norm="l1", steps=6, n_target_classes=2, bounds=(-1.0, 1.0))(m, x.to(dtype), y)
        dist = lp_norm(r.x_adv.double() - x.to(dtype).double(), "l1")
        assert r.x_adv.dtype == dtype
        assert bool((dist <= 1.5 * (1 + 1e-5)).all()) and float(r.x_adv.min()) >= -1
