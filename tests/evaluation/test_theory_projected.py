"""Fawzi, Fawzi & Fawzi (2018), Theorems 2 and 3: the projected classifier f̃ = f ∘ g ∘ z* (its
projection against least squares, its robustness against r_in / 2) and the transfer bound (closed
form by hand, and the measured joint-fooling rate above it where the theorem's assumptions hold)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _helpers import assert_unchanged, snapshot
from torch import nn

from advlab.attacks.decision import HopSkipJump
from advlab.evaluation.theory import (LatentSearch, ProjectedClassifier, fawzi_bound, measure_projected,
                                      measure_transfer, transfer_bound)
from advlab.evaluation.theory.transfer import joint_search

FAST = LatentSearch(steps=30, refine_steps=4, targets=1)
WIDE = (-50.0, 50.0)  # the linear generators are not confined to [0, 1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _linear_generator(singular, out_dim=16, seed=0):
    """``g(z) = A z + b`` with the given singular values; ``(A, b, g)``."""
    gen = torch.Generator().manual_seed(seed)
    d = len(singular)
    u, _ = torch.linalg.qr(torch.randn(out_dim, d, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    A = u @ torch.diag(torch.tensor(singular)) @ v.T
    b = torch.randn(out_dim, generator=gen)
    return A, b, (lambda zz: zz @ A.T + b)


class _LatentReadout(nn.Module):
    """On a linear generator's range, ``f(g(z)) = W z``: ``f(x) = W A^+ (x - b)``."""

    def __init__(self, A, b, angles):
        super().__init__()
        self.register_buffer("P", torch.linalg.pinv(A))
        self.register_buffer("b", b)
        self.register_buffer("W", torch.stack([torch.cos(angles), torch.sin(angles)], dim=1))
        self.eval()

    def forward(self, x):
        return (x - self.b) @ self.P.T @ self.W.T


def _sectors(offset=0.0):
    """Three balanced classes in a 2-d latent space: 120° sectors rotated by ``offset``."""
    return torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + offset


# -- the projection -------------------------------------------------------------------------------


def test_projection_recovers_z_on_a_linear_generator():
    A, b, g = _linear_generator([3.0, 2.0, 1.5, 1.0])
    f = nn.Linear(16, 3)
    ft = ProjectedClassifier(f, g, 4, restarts=3)  # 300 steps, lr 0.2
    z = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    z_star, residual = ft.project(g(z))
    assert (z_star - z).abs().max() <= 1e-3
    assert residual.max() <= 1e-3 * 3.0
    # off the manifold: the least-squares solution
    x = g(z) + torch.randn(40, 16, generator=torch.Generator().manual_seed(2))
    z_ls = torch.linalg.lstsq(A, (x - b).T).solution.T
    z_star, residual = ft.project(x)
    assert (z_star - z_ls).abs().max() <= 1e-3
    torch.testing.assert_close(residual, (g(z_ls) - x).norm(dim=1), atol=1e-3, rtol=1e-4)


def test_projected_classifier_is_f_at_the_projection_and_leaves_everything_unchanged():
    A, b, g = _linear_generator([2.0, 1.0, 0.5])
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4)).eval()
    before = snapshot(f)
    state = torch.random.get_rng_state()
    ft = ProjectedClassifier(f, g, 3, steps=300, restarts=2)
    x = torch.randn(30, 16, generator=torch.Generator().manual_seed(3)) * 2.0
    z_ls = torch.linalg.lstsq(A, (x - b).T).solution.T
    with torch.no_grad():
        expected = f(g(z_ls))
    logits = ft(x)
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-3)
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    assert not logits.requires_grad  # the argmin is not differentiated: gradient attacks need BPDA
    assert_unchanged(f, before)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.grad is None for p in f.parameters())
    # deterministic and independent of the batch it is in
    torch.testing.assert_close(ft(x[:7]), logits[:7], atol=1e-5, rtol=1e-5)
    # BPDA: the exact forward, with a gradient
    xr = x[:4].clone().requires_grad_(True)
    out = ft.bpda()(xr)
    torch.testing.assert_close(out.detach(), logits[:4], atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert xr.grad is not None and bool(torch.isfinite(xr.grad).all())


def test_projected_classifier_bad_input():
    _, _, g = _linear_generator([1.0, 1.0])
    f = nn.Linear(16, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        ProjectedClassifier(f, g, 3)  # g takes 2-d codes
    with pytest.raises(ValueError, match="latent_dim"):
        ProjectedClassifier(f, g, 0)
    with pytest.raises(ValueError, match="restarts"):
        ProjectedClassifier(f, g, 2, restarts=0)
    ft = ProjectedClassifier(f, g, 2, steps=5)
    with pytest.raises(ValueError, match=r"shape \(B, 16\)"):
        ft(torch.zeros(3, 15))
    with pytest.raises(ValueError, match="latent_dim=3"):
        measure_projected(f, g, torch.zeros(2, 3), projected=ft)
    with pytest.raises(TypeError, match="ProjectedClassifier"):
        measure_projected(f, g, torch.zeros(2, 2), projected=f)


# -- Theorem 2 ------------------------------------------------------------------------------------


def test_theorem2_on_a_flat_manifold():
    """On an affine manifold the exact projection is orthogonal, so f̃'s boundary is f's on the
    manifold extended straight out of it: r_unc(f̃) = r_in, twice what Theorem 2 guarantees."""
    A, b, g = _linear_generator([1.0, 0.6], out_dim=8, seed=4)
    f = _LatentReadout(A, b, _sectors())
    ft = ProjectedClassifier(f, g, 2, steps=200, restarts=2)
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(5))
    before = snapshot(f)
    res = measure_projected(f, g, z, projected=ft, search=FAST, bounds=WIDE,
                            attacks={"HopSkipJump": HopSkipJump(norm="l2", budget=400, steps=15, bounds=WIDE)})
    assert_unchanged(f, before)
    assert bool(torch.isfinite(res.r_in).all()) and bool(torch.isfinite(res.r_unc_projected).all())
    assert res.fraction_half() == 1.0 and res.violations()["total"] == 0
    ratio = res.ratio.numpy()
    assert np.all(ratio >= 0.95) and np.all(ratio <= 1.01), ratio
    assert res.above_r_in() == 0  # the exact projection recovers every g(z + r): f̃ = f on the manifold
    assert bool(res.label_kept.all()) and float(res.latent_error.max()) <= 1e-3
    assert bool((res.r_in_tight <= res.r_in).all())
    # every reported radius is a verified label change of f̃
    assert set(res.by_attack) == {"segment to g(z + r_in)", "HopSkipJump"}
    s = res.summary()
    assert s["fraction_half"] == 1.0 and s["ratio"]["median"] == pytest.approx(float(np.median(ratio)))


def test_theorem2_violations_are_counted_not_hidden():
    """A projection that barely moves (1 Adam step from z = 0) is not the argmin: the measurement
    must report the resulting violations of r_unc(f̃) >= r_in / 2 and blame the projection."""
    A, b, g = _linear_generator([1.0, 0.6], out_dim=8, seed=4)
    f = _LatentReadout(A, b, _sectors(0.3))
    bad = ProjectedClassifier(f, g, 2, steps=1, restarts=1, lr=1e-3)
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(5)) * 1.5
    res = measure_projected(f, g, z, projected=bad, search=FAST, bounds=WIDE, attacks={})
    v = res.violations()
    assert v["total"] >= 1
    assert v["total"] == v["loose_r_in"] + v["projection"]
    assert res.fraction_half() == pytest.approx(1 - v["total"] / v["measured"])
    assert v["label_changed_at_x"] >= 1 and not bool(res.label_kept.all())
    assert float(res.residual_at_x.median()) > 0.1


# -- Theorem 3: the bound -------------------------------------------------------------------------


@pytest.mark.parametrize("eta,L,delta,expected", [
    (2.0, 1.0, 0.05, 1 - 1.2533141373155 * math.exp(-2.0) - 0.1),   # 0.7303823
    (3.0, 1.5, 0.1, 1 - 1.2533141373155 * math.exp(-2.0) - 0.2),    # η / L = 2: 0.6303823
    (1.0, 1.0, 0.0, 1 - 1.2533141373155 * math.exp(-0.5)),          # δ = 0: eq. (6), 0.2398265
    (0.0, 1.0, 0.0, 0.0), (0.5, 1.0, 0.0, 0.0),                      # eq. (6) is negative: clipped
    (10.0, 1.0, 0.5, 0.0),                                           # δ = 1/2: vacuous
    (math.inf, 2.0, 0.1, 0.8),
])
def test_transfer_bound_by_hand(eta, L, delta, expected):
    value = transfer_bound(eta, L, delta=delta)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert transfer_bound(2.0, 1.0, delta=0.05) == pytest.approx(0.7303823, abs=1e-7)


def test_transfer_bound_monotone_and_in_unit_interval():
    etas = np.linspace(0.0, 10.0, 2001)
    for L in (0.3, 1.0, 4.0):
        for delta in (0.0, 0.02, 0.2, 0.49, 1.0):
            b = transfer_bound(etas, L, delta=delta)
            assert isinstance(b, np.ndarray) and b.shape == etas.shape
            assert np.all(np.diff(b) >= 0) and np.all((b >= 0) & (b <= 1))
        np.testing.assert_allclose(transfer_bound(etas, L, delta=0.0), fawzi_bound(etas, L))
        assert np.all(transfer_bound(etas, L, delta=0.1) <= transfer_bound(etas, L, delta=0.05))
    assert np.all(transfer_bound(etas, 1.0, delta=0.1) >= transfer_bound(etas, 2.0, delta=0.1))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(eta=-0.1, L=1.0, delta=0.1), ValueError, "eta"),
    (dict(eta=1.0, L=0.0, delta=0.1), ValueError, "L must"),
    (dict(eta=1.0, L=-1.0, delta=0.1), ValueError, "L must"),
    (dict(eta=1.0, L=1.0, delta=-0.01), ValueError, "delta must"),
    (dict(eta=1.0, L=1.0, delta=1.5), ValueError, "delta must"),
    (dict(eta=1.0, L=1.0, delta=float("nan")), ValueError, "delta must"),
    (dict(eta=1.0, L=1.0, delta=True), TypeError, "delta must"),
])
def test_transfer_bound_bad_input(kwargs, error, match):
    eta, L, delta = kwargs["eta"], kwargs["L"], kwargs["delta"]
    with pytest.raises(error, match=match):
        transfer_bound(eta, L, delta=delta)


# -- Theorem 3: the measurement -------------------------------------------------------------------


def _isometric_toy(scale=0.7, rotation=0.15, n=120):
    """The theorem's assumptions exactly: z ~ N(0, I_2), g(z) = scale · U z + b with U orthonormal
    (L = scale, exactly), f and h three balanced 120° sectors in z, h rotated by ``rotation``
    (δ = 3 · rotation / 2π)."""
    gen = torch.Generator().manual_seed(11)
    u, _ = torch.linalg.qr(torch.randn(10, 2, generator=gen))
    A = scale * u
    b = torch.rand(10, generator=gen)
    g = lambda zz: zz @ A.T + b  # noqa: E731
    f = _LatentReadout(A, b, _sectors())
    h = _LatentReadout(A, b, _sectors(rotation))
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(12))
    return g, f, h, z


def test_joint_search_fools_both_and_is_no_smaller_than_either_alone():
    g, f, h, z = _isometric_toy(n=40)
    cost, r = joint_search(f, h, g, z, metric="latent", search=FAST)
    ok = torch.isfinite(cost)
    assert bool(ok.all())  # the targeted joint search reaches a third class even where f and h disagree
    with torch.no_grad():
        x, xa = g(z[ok]), g(z[ok] + r[ok])
        assert bool((f(xa).argmax(1) != f(x).argmax(1)).all())
        assert bool((h(xa).argmax(1) != h(x).argmax(1)).all())
    torch.testing.assert_close(cost[ok], r[ok].norm(dim=1))
    # the joint radius is at least each classifier's exact latent distance to its own boundary
    zf = z[ok]
    ang = torch.atan2(zf[:, 1], zf[:, 0])
    for offset in (0.0, 0.15):
        bisectors = _sectors(offset) + math.pi / 3  # sector boundaries: rays at the bisectors
        rel = (ang[:, None] - bisectors[None, :]) % (2 * math.pi)
        dist = torch.where(rel < math.pi / 2, zf.norm(dim=1, keepdim=True) * torch.sin(rel),
                           zf.norm(dim=1, keepdim=True) * torch.ones_like(rel)).abs()
        rel2 = (bisectors[None, :] - ang[:, None]) % (2 * math.pi)
        dist2 = torch.where(rel2 < math.pi / 2, zf.norm(dim=1, keepdim=True) * torch.sin(rel2),
                            zf.norm(dim=1, keepdim=True) * torch.ones_like(rel2)).abs()
        exact = torch.minimum(dist.min(dim=1).values, dist2.min(dim=1).values)
        assert bool((cost[ok] >= exact * (1 - 1e-4) - 1e-6).all())


def test_measured_joint_rate_is_above_the_transfer_bound():
    """Gaussian latent, L known exactly, balanced classes: Theorem 3 must hold, and since every
    counted perturbation really fools both, the measured rate is a lower estimate of the true
    probability; it must be above the bound at every η."""
    scale = 0.7
    g, f, h, z = _isometric_toy(scale=scale)
    before = snapshot(f), snapshot(h)
    res = measure_transfer(f, h, g, z, lipschitz=scale, names=("f", "h"), search=FAST, delta_samples=20_000,
                           bounds=WIDE)
    assert_unchanged(f, before[0])
    assert_unchanged(h, before[1])
    assert res.delta == pytest.approx(3 * 0.15 / (2 * math.pi), abs=0.01)
    etas = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]) * scale
    rate, bound = res.rate(etas), res.bound(etas)
    np.testing.assert_allclose(bound, transfer_bound(etas, scale, delta=res.delta))
    assert np.all(np.diff(rate) >= 0)
    assert np.all(rate >= bound), (rate, bound)
    assert bound[-1] > 0.5  # not a vacuous comparison
    # on an isometry the input radius is scale × the latent one
    ok = torch.isfinite(res.joint) & torch.isfinite(res.joint_latent)
    assert bool((res.joint[ok] <= scale * res.joint_latent[ok] * (1 + 1e-3)).all())
    lat_etas = etas / scale
    assert np.all(res.rate(lat_etas, metric="latent") >= res.bound(lat_etas, metric="latent"))
    s = res.summary(etas)
    assert s["input"]["rate"] == pytest.approx(rate.tolist())
    assert 0.0 <= s["f_transfers"] <= 1.0


def test_measure_transfer_bad_input():
    g, f, h, z = _isometric_toy(n=4)
    with pytest.raises(ValueError, match="L must"):
        measure_transfer(f, h, g, z, lipschitz=0.0, bounds=WIDE)
    with pytest.raises(ValueError, match="latent_dim|latent codes"):
        measure_transfer(f, h, g, torch.zeros(4, 3), lipschitz=1.0, bounds=WIDE)
    with pytest.raises(ValueError, match="z must"):
        measure_transfer(f, h, g, torch.zeros(4), lipschitz=1.0, bounds=WIDE)


# -- the bounds table and its figure --------------------------------------------------------------


class _SigmoidReadout(nn.Module):
    """On ``g(z) = sigmoid(A z + b)``, ``f(g(z)) = W z``: ``f(x) = W A^+ (logit(x) - b)``."""

    def __init__(self, A, b, angles):
        super().__init__()
        self.register_buffer("P", torch.linalg.pinv(A))
        self.register_buffer("b", b)
        self.register_buffer("W", torch.stack([torch.cos(angles), torch.sin(angles)], dim=1))
        self.eval()

    def forward(self, x):
        x = x.clamp(1e-6, 1 - 1e-6)
        return (torch.log(x / (1 - x)) - self.b) @ self.P.T @ self.W.T


@pytest.fixture(scope="module")
def theorem_table():
    from advlab.evaluation.theory import bounds_table

    gen = torch.Generator().manual_seed(0)
    A = 0.8 * torch.randn(12, 2, generator=gen)
    b = 0.2 * torch.randn(12, generator=gen)
    g = lambda zz: torch.sigmoid(zz @ A.T + b)  # noqa: E731
    clfs = {"f": _SigmoidReadout(A, b, _sectors()), "h": _SigmoidReadout(A, b, _sectors(0.2))}
    return bounds_table(clfs, g, latent_dim=2, n=16, seed=1, lipschitz_samples=32, search=FAST, progress=False,
                        projected=["f"], projected_n=6, projection={"steps": 100, "restarts": 2},
                        query_budget=300, transfer=True, transfer_etas=[0.1, 0.2, 0.4], delta_samples=4000)


def test_table_sections_for_theorems_2_and_3(theorem_table):
    from advlab.evaluation.theory import BoundsTable

    t = theorem_table
    assert list(t.projected) == ["f"] and list(t.transfer) == ["f & h"]
    p, tr = t.projected["f"], t.transfer["f & h"]
    assert p.n == 6 and tr.n == 16
    torch.testing.assert_close(p.z, t.results["f"].z[:6])
    # the same search at the same points: Theorem 2's r_in is Theorem 1's
    torch.testing.assert_close(p.r_in, t.results["f"].r_in[:6])
    assert tr.lipschitz == t.lipschitz
    md = t.to_markdown()
    assert "Theorem 2" in md and "Theorem 3" in md
    row = [line for line in md.splitlines() if line.startswith("| P(r_unc(f̃) ≥ ½·r_in)")][0]
    assert f"{p.fraction_half():.2f}" in row
    rows3 = [line for line in md.splitlines() if line.startswith("| 0.2 |")]
    assert rows3 and f"{tr.rate([0.2])[0]:.2f} / {tr.bound([0.2])[0]:.2f}" in rows3[0]
    # the Theorem 1 part is what a table without the new sections renders
    plain = BoundsTable(lipschitz=t.lipschitz, results=t.results, lipschitz_estimate=t.lipschitz_estimate,
                        error_rates=t.error_rates, provenance=t.provenance)
    assert md.startswith(plain.to_markdown())
    assert "theorem2" not in plain.to_dict() and "theorem3" not in plain.to_dict()
    assert t.to_markdown(relative=True) == plain.to_markdown(relative=True)
    data = json.loads(t.to_json())
    assert data["theorem2"]["summary"]["f"]["fraction_half"] == pytest.approx(p.fraction_half())
    assert data["theorem3"]["summary"]["f & h"]["input"]["rate"] == pytest.approx(tr.rate([0.1, 0.2, 0.4]).tolist())
    assert data["provenance"]["theorem2"]["classifiers"] == ["f"]
    back = BoundsTable.from_json(t.to_json())
    assert back.to_markdown() == md


def test_theorem_table_numbers(theorem_table):
    p = theorem_table.projected["f"]
    v = p.violations()
    assert v["measured"] == 6
    # a curved but well-conditioned toy: the projection is exact enough for the theorem everywhere
    assert p.fraction_half(tight=True) == 1.0, p.summary()
    # 100 Adam steps leave residuals up to ~0.04 here, small next to the radii being compared
    assert bool((p.residual_at_x <= 0.2 * p.r_in).all()), (p.residual_at_x, p.r_in)
    tr = theorem_table.transfer["f & h"]
    assert 0.0 < tr.delta < 0.2


def test_bounds_figure_theorem_panels(theorem_table, tmp_path):
    from advlab.reports.bounds import bound_cdf_figure

    fig = bound_cdf_figure(theorem_table, path=tmp_path / "b.png")
    assert len(fig.axes) == 4
    t2, t3 = fig.axes[2], fig.axes[3]
    line = [ln for ln in t2.get_lines() if ln.get_label().startswith("Theorem 2")][0]
    x, y = line.get_data()
    np.testing.assert_allclose(y, np.asarray(x) / 2)
    pts = t2.collections[0].get_offsets()
    p = theorem_table.projected["f"]
    np.testing.assert_allclose(np.asarray(pts)[:, 0], p.r_in.numpy(), rtol=1e-6)
    tr = theorem_table.transfer["f & h"]
    bound = [ln for ln in t3.get_lines() if ln.get_label().startswith("Theorem 3")][0]
    x, y = bound.get_data()
    np.testing.assert_allclose(y, transfer_bound(np.asarray(x), theorem_table.lipschitz, delta=tr.delta))
    measured = [ln for ln in t3.get_lines() if "measured" in ln.get_label()][0]
    x, y = measured.get_data()
    np.testing.assert_allclose(y, tr.rate(np.asarray(x)))
    assert len(bound_cdf_figure(theorem_table, theorem_panels=False).axes) == 2


def test_bounds_table_theorem_options_bad_input():
    from advlab.evaluation.theory import bounds_table

    f = nn.Linear(8, 2).eval()
    g = torch.sigmoid  # (B, 8) -> (B, 8) in [0, 1]
    common = dict(latent_dim=8, n=2, lipschitz=0.25, progress=False, search=FAST, attacks={})
    with pytest.raises(ValueError, match="not one of the classifiers"):
        bounds_table({"f": f}, g, projected=["nope"], **common)
    with pytest.raises(ValueError, match="two classifiers"):
        bounds_table({"f": f}, g, transfer=True, **common)
    with pytest.raises(ValueError, match="two different classifier names"):
        bounds_table({"f": f, "h": f}, g, transfer=[("f", "f")], **common)
    with pytest.raises(TypeError, match="string"):
        bounds_table({"f": f}, g, projected="f", **common)
    with pytest.raises(ValueError, match="projected_n"):
        bounds_table({"f": f}, g, projected=True, projected_n=0, **common)
