"""Geometry: decision maps, the GAAS dimension estimate and the successive-update cosine.

Closed forms on linear models (straight boundaries; the exact side of a 2-class boundary on every
cell; the analytic GAAS count), the construction's invariants, and a recorder that is checked bit
for bit against the real attacks at every iterate.
"""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import assert_unchanged, snapshot
from torch import nn

from advlab.attacks import IFGSM, MIFGSM, PGD
from advlab.evaluation.geometry import (
    adversarial_subspace_dim,
    decision_map,
    default_cosine_attacks,
    gaas_directions,
    perturbation_cosine_similarity,
    record_trajectory,
    successive_cosine,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary(linear_model: nn.Module, a: int, b: int) -> nn.Module:
    """A 2-class linear model: the rows ``a`` and ``b`` of the digits softmax regression."""
    lin = linear_model[1]
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        m[1].weight.copy_(lin.weight[[a, b]])
        m[1].bias.copy_(lin.bias[[a, b]])
    return m.eval()


@pytest.fixture(scope="module")
def binary(linear_model, digits):
    """The 3-vs-8 linear model and the test digits of those classes, relabelled 0 / 1."""
    model = _binary(linear_model, 3, 8)
    x, y = digits["x_test"], digits["y_test"]
    keep = (y == 3) | (y == 8)
    return model, x[keep], (y[keep] == 8).long()


def _logit_gap(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w = W_1 - W_0`` (float64, flat) and ``f(x) = z_1 - z_0`` (float64) of a 2-class linear model."""
    lin = model[1]
    with torch.no_grad():
        w = (lin.weight[1] - lin.weight[0]).double()
        c = float(lin.bias[1] - lin.bias[0])
    return w, x.flatten(1).double() @ w + c


# -- decision maps ---------------------------------------------------------------------------------


def test_origin_cell_is_the_clean_prediction(cnn_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    with torch.no_grad():
        probs = torch.softmax(cnn_model(x), dim=1)
    for i in range(4):
        dmap = decision_map(cnn_model, x[i:i + 1], y[i:i + 1], extent=0.3, resolution=21, generator=_gen(i))
        assert dmap.origin == (10, 10) and float(dmap.coords[10]) == 0.0
        assert int(dmap.classes[10, 10]) == dmap.clean_class == int(probs[i].argmax())
        assert dmap.true_class == int(y[i])
        assert float(dmap.confidence[10, 10]) == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert dmap.clean_confidence == pytest.approx(float(probs[i].max()), abs=1e-6)
    # an even resolution has no centre cell
    even = decision_map(cnn_model, x[:1], y[:1], extent=0.3, resolution=10, generator=_gen())
    assert even.origin is None and even.classes.shape == (10, 10)


def test_u_is_fgsm_sign_and_v_is_orthogonal_with_the_same_norm(cnn_model, digits):
    x, y = digits["x_test"][7:8], digits["y_test"][7:8]
    leaf = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(cnn_model(leaf), y), leaf)
    dmap = decision_map(cnn_model, x, y, resolution=5, generator=_gen(3))
    assert torch.equal(dmap.u, grad[0].sign())
    u, v = dmap.u.double().flatten(), dmap.v.double().flatten()
    assert abs(float(u @ v)) < 1e-5 * float(u.norm() * v.norm())
    assert float(v.norm()) == pytest.approx(float(u.norm()), rel=1e-6)
    assert dmap.u_norms["linf"] == 1.0 and dmap.u_norms["l2"] == pytest.approx(float(u.norm()))
    assert dmap.v_norms["l2"] == pytest.approx(dmap.u_norms["l2"], rel=1e-6)
    # L2: u is the unit gradient
    d2 = decision_map(cnn_model, x, y, norm="l2", resolution=5, generator=_gen(3))
    torch.testing.assert_close(d2.u, grad[0] / grad.norm(), rtol=1e-5, atol=1e-7)
    assert float(d2.v.double().norm()) == pytest.approx(1.0, rel=1e-6)


def test_each_cell_is_the_stated_point(cnn_model, digits):
    """classes[i, j] is the class of x + coords[j]·u + coords[i]·v (columns u, rows v)."""
    x, y = digits["x_test"][11:12], digits["y_test"][11:12]
    dmap = decision_map(cnn_model, x, y, extent=(-0.4, 0.6), resolution=15, generator=_gen(1))
    assert len(torch.unique(dmap.classes)) >= 2  # the check below can tell rows from columns
    cells = [(0, 0), (0, 14), (14, 0), (3, 11), (11, 3), (7, 13), (14, 14)]
    c = dmap.coords.float()
    pts = torch.stack([x[0] + c[j] * dmap.u + c[i] * dmap.v for i, j in cells])
    with torch.no_grad():
        probs = torch.softmax(cnn_model(pts), dim=1)
    for k, (i, j) in enumerate(cells):
        assert int(dmap.classes[i, j]) == int(probs[k].argmax()), (i, j)
        assert float(dmap.confidence[i, j]) == pytest.approx(float(probs[k].max()), abs=1e-5)


def test_linear_model_boundaries_are_straight(linear_model, digits):
    """Argmax regions of an affine model are convex: along any grid line each class is one run,
    so the class changes at most C - 1 times."""
    x, y = digits["x_test"], digits["y_test"]
    seen = 0
    for i in range(6):
        dmap = decision_map(linear_model, x[i:i + 1], y[i:i + 1], extent=1.5, resolution=41,
                            generator=_gen(i))
        seen = max(seen, len(torch.unique(dmap.classes)))
        for line in list(dmap.classes) + list(dmap.classes.T):
            runs = torch.unique_consecutive(line)
            assert len(runs) == len(torch.unique(runs)), runs.tolist()  # no class returns
            assert len(runs) - 1 <= dmap.num_classes - 1
    assert seen >= 3  # the maps cross several boundaries


def test_two_class_linear_map_matches_the_analytic_decision_function(binary):
    model, x, y = binary
    w, _ = _logit_gap(model, x[:1])
    mixed = 0
    for i in range(5):
        dmap = decision_map(model, x[i:i + 1], y[i:i + 1], extent=1.0, resolution=41, generator=_gen(i))
        c = dmap.coords.float().double()
        _, f0 = _logit_gap(model, x[i:i + 1])
        wu, wv = float(w @ dmap.u.double().flatten()), float(w @ dmap.v.double().flatten())
        f = float(f0) + c[None, :] * wu + c[:, None] * wv              # (R, R): rows v, columns u
        clear = f.abs() > 1e-4
        assert int((~clear).sum()) <= 2
        assert torch.equal(dmap.classes[clear], (f[clear] > 0).long())
        mixed += int(len(torch.unique(dmap.classes)) == 2)
    assert mixed >= 3  # the boundary crosses most maps


def test_bounds_clip_the_points_and_default_does_not(cnn_model, digits):
    x, y = digits["x_test"][2:3], digits["y_test"][2:3]
    free = decision_map(cnn_model, x, y, extent=0.5, resolution=9, generator=_gen())
    boxed = decision_map(cnn_model, x, y, extent=0.5, resolution=9, bounds=(0.0, 1.0), generator=_gen())
    assert free.bounds is None and free.clipped_fraction == 0.0
    assert boxed.bounds == (0.0, 1.0) and boxed.clipped_fraction > 0.5
    torch.testing.assert_close(free.u, boxed.u)
    c = boxed.coords.float()
    pts = torch.stack([(x[0] + c[j] * boxed.u + c[i] * boxed.v).clamp(0, 1) for i in range(9) for j in range(9)])
    with torch.no_grad():
        assert torch.equal(cnn_model(pts).argmax(1).view(9, 9), boxed.classes)


def test_given_directions_are_normalised_and_orthogonalised(cnn_model, digits):
    x, y = digits["x_test"][:1], digits["y_test"][:1]
    d = torch.zeros(1, 8, 8)
    d[0, 2, 3] = -4.0
    other = torch.ones(1, 1, 8, 8)
    dmap = decision_map(cnn_model, x, y, direction=d, other=other, resolution=5)
    assert dmap.direction == "given" and dmap.other == "given"
    assert float(dmap.u[0, 2, 3]) == -1.0 and dmap.u_norms["l2"] == 1.0
    u, v = dmap.u.flatten().double(), dmap.v.flatten().double()
    assert abs(float(u @ v)) < 1e-6 and float(v.norm()) == pytest.approx(1.0, rel=1e-6)
    assert float(v[2 * 8 + 3]) == pytest.approx(0.0, abs=1e-7)  # the u coordinate is removed
    with pytest.raises(ValueError, match="parallel"):
        decision_map(cnn_model, x, y, direction=d, other=3 * d, resolution=5)
    with pytest.raises(ValueError, match="one input"):
        decision_map(cnn_model, digits["x_test"][:2], digits["y_test"][:2])
    with pytest.raises(ValueError, match="zero"):
        decision_map(cnn_model, x, y, direction=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="resolution"):
        decision_map(cnn_model, x, y, resolution=1)
    with pytest.raises(ValueError, match="shaped like one input"):
        decision_map(cnn_model, x, y, direction=torch.ones(64))


def test_decision_map_is_pure_and_seeded(cnn_model, digits):
    x, y = digits["x_test"][5:6].clone(), digits["y_test"][5:6].clone()
    x0, before, rng = x.clone(), snapshot(cnn_model), torch.get_rng_state()
    cnn_model.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            a = decision_map(cnn_model, x, int(y), resolution=7, generator=_gen(4))
    finally:
        cnn_model.eval()
    b = decision_map(cnn_model, x, y, resolution=7, generator=_gen(4))
    c = decision_map(cnn_model, x, y, resolution=7, generator=_gen(5))
    assert_unchanged(cnn_model, before)
    assert torch.equal(x, x0) and torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a.classes, b.classes) and torch.equal(a.v, b.v)
    assert not torch.equal(b.v, c.v)
    d = b.to_dict()
    assert d["classes"] == b.classes.tolist() and "code_revision" in d["provenance"]


# -- GAAS (Tramèr et al. 2017) ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 7, 16, 64])
@pytest.mark.parametrize("random_coords", [False, True])
def test_gaas_directions_are_orthogonal_with_equal_alignment(k, random_coords):
    g = torch.randn(4, 1, 8, 8, generator=_gen(k), dtype=torch.float64)
    g[1] = 0
    g[1, 0, 0, 0] = -2.5          # a negative multiple of e_1: the reflection must flip it
    g[2, 0, 0, 0] = 0.0           # first coordinate exactly zero
    g[3] = 0
    g[3, 0, 0, 0] = 1.5           # already a positive multiple of e_1: R is the identity
    eps = 0.7
    r = gaas_directions(g, k, eps=eps, generator=_gen(9) if random_coords else None)
    assert r.shape == (4, k, 1, 8, 8) and r.dtype == torch.float64
    flat = r.flatten(2)
    gram = flat @ flat.transpose(1, 2)
    torch.testing.assert_close(gram, eps ** 2 * torch.eye(k, dtype=torch.float64).expand(4, k, k),
                               rtol=0, atol=1e-12)
    align = (flat @ g.flatten(1)[:, :, None]).squeeze(2)                 # (4, k)
    want = eps * g.flatten(1).norm(dim=1, keepdim=True) / math.sqrt(k)
    torch.testing.assert_close(align, want.expand(4, k), rtol=1e-12, atol=1e-12)
    if k == 1:  # one direction: the FGM step
        torch.testing.assert_close(r[:, 0], eps * g / g.flatten(1).norm(dim=1).view(4, 1, 1, 1))


def test_gaas_directions_errors_and_dtype():
    g = torch.randn(2, 10, generator=_gen())
    assert gaas_directions(g, 3).dtype == torch.float32
    with pytest.raises(ValueError, match="k must be"):
        gaas_directions(g, 11)
    with pytest.raises(ValueError, match="non-zero"):
        gaas_directions(torch.zeros(1, 10), 2)


def test_gaas_dimension_on_a_linear_binary_model_is_the_analytic_count(binary):
    """Every r_i moves the logit gap by eps·||w||/√k, so all k or none of them are adversarial, and
    the estimate is the largest tested k < (eps·||w|| / |f(x)|)²."""
    model, x, y = binary
    w, f = _logit_gap(model, x)
    correct = (f > 0).long() == y
    margin = f.abs() / w.norm()                                          # L2 distance to the boundary
    eps = 4.3 * float(margin[correct].median())  # (4 would put the median point on a tie at k = 16)
    ratio = (eps / margin) ** 2
    for ks in (None, tuple(range(1, 41))):
        res = adversarial_subspace_dim(model, x, y, eps=eps, max_directions=32, ks=ks)
        tested = res.ks
        assert torch.equal(res.correct, correct)
        assert not bool(res.zero_grad.any())
        m = res.measured
        kt = torch.tensor(tested)
        # points whose (eps / margin)² is not within 1e-3 of a tested k (a tie at float precision)
        rel = (ratio[m][:, None] / kt[None, :].double() - 1).abs().amin(dim=1)
        clear = rel > 1e-3
        assert int(clear.sum()) >= int(m.sum()) - 2 and int(m.sum()) >= 50
        counts = res.n_adversarial[m][clear]
        assert bool(((counts == 0) | (counts == kt[None, :])).all())   # all or none
        expect = torch.where(kt[None, :].double() < ratio[m][:, None], kt[None, :], 0).amax(dim=1)
        assert torch.equal(res.dims[m][clear], expect[clear])
        assert bool((res.dims[~m] == -1).all())
        dist = res.distribution()
        assert sum(dist.values()) == int(m.sum()) and len(set(expect.tolist())) >= 4


def test_gaas_counts_match_a_direct_computation(cnn_model, digits):
    """The batched count equals building the directions and classifying x + r_i point by point,
    with the paper's coordinates and with random ones, clipped and not."""
    x, y = digits["x_test"][:12], digits["y_test"][:12]
    for bounds, seed in ((None, None), ((0.0, 1.0), 3)):
        res = adversarial_subspace_dim(cnn_model, x, y, eps=1.5, ks=(1, 3, 8), bounds=bounds,
                                       generator=None if seed is None else _gen(seed), batch_size=7)
        leaf = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(nn.functional.cross_entropy(cnn_model(leaf), y, reduction="sum"), leaf)
        idx = res.measured.nonzero().squeeze(1)
        assert idx.numel() >= 10
        for j, k in enumerate(res.ks):
            gen = None if seed is None else _gen(seed)
            r = gaas_directions(grad[idx], k, eps=1.5, generator=gen)      # (M, k, 1, 8, 8)
            pts = x[idx][:, None] + r
            if bounds is not None:
                pts = pts.clamp(*bounds)
            with torch.no_grad():
                wrong = cnn_model(pts.flatten(0, 1)).argmax(1).view(-1, k) != y[idx][:, None]
            assert torch.equal(res.n_adversarial[idx, j], wrong.sum(1)), (bounds, k)


def test_gaas_fraction_and_eps_order(cnn_model, digits):
    x, y = digits["x_test"][:60], digits["y_test"][:60]
    all_ = adversarial_subspace_dim(cnn_model, x, y, eps=1.0, max_directions=16)
    half = adversarial_subspace_dim(cnn_model, x, y, eps=1.0, max_directions=16, fraction=0.5)
    big = adversarial_subspace_dim(cnn_model, x, y, eps=3.0, max_directions=16)
    assert all_.ks == (1, 2, 4, 8, 16)
    m = all_.measured
    assert bool((half.dims[m] >= all_.dims[m]).all())                  # a weaker requirement
    assert big.summary()["mean_dim"] > all_.summary()["mean_dim"]
    s = all_.summary()
    assert s["n"] == 60 and s["n_measured"] == int(m.sum()) and s["n_correct"] == int(all_.correct.sum())
    assert set(s["distribution"]) == {"0", "1", "2", "4", "8", "16"}


# -- trajectories and successive-update cosine --------------------------------------------------------


class _Recording(nn.Module):
    """Passes inputs through to the model and keeps a copy of each batch it is called on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


ATTACKS = {
    "ifgsm": IFGSM(eps=0.1, steps=10),
    "mifgsm": MIFGSM(eps=0.1, steps=10, decay=1.0),
    "mifgm-l2": MIFGSM(eps=1.0, steps=7, decay=0.8, norm="l2"),
    "pgd-rs": PGD(eps=0.1, steps=5),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_recorder_follows_the_attack_bit_for_bit(name, cnn_model, digits):
    """The final iterate is the attack's x_adv, and every iterate is exactly the input the real
    attack fed the model at that step."""
    attack = ATTACKS[name]
    x, y = digits["x_test"][:32], digits["y_test"][:32]
    traj = record_trajectory(attack, cnn_model, x, y, generator=_gen(2))
    res = attack(cnn_model, x, y, generator=_gen(2))
    assert torch.equal(traj.x_adv, res.x_adv)
    probe = _Recording(cnn_model).eval()
    res2 = attack(probe, x, y, generator=_gen(2))
    assert torch.equal(res2.x_adv, res.x_adv)
    assert len(probe.seen) == traj.steps + 1 == attack.steps + 1
    for t, seen in enumerate(probe.seen):
        assert torch.equal(seen, traj.iterates[t]), t
    assert traj.updates.shape == (attack.steps, 32, 1, 8, 8)


def test_recorder_rejects_what_it_cannot_follow(cnn_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    with pytest.raises(ValueError, match="early_stop"):
        record_trajectory(IFGSM(eps=0.1, early_stop=True), cnn_model, x, y)
    with pytest.raises(ValueError, match="restarts"):
        record_trajectory(PGD(eps=0.1, restarts=2), cnn_model, x, y)
    with pytest.raises(TypeError, match="supports"):
        record_trajectory(object(), cnn_model, x, y)


def test_successive_cosine_closed_form():
    steps = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]], [[0.0, 0.0]]])  # (T=4, B=1, 2)
    cos = successive_cosine(steps)
    assert cos.shape == (3, 1)
    assert float(cos[0, 0]) == pytest.approx(1 / math.sqrt(2))
    assert float(cos[1, 0]) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(float(cos[2, 0]))


def test_mifgsm_updates_are_more_similar_than_ifgsm(cnn_model, digits):
    """The seed's claim (Dong et al. 2018), measured on the digits CNN: ε = 0.1 L∞,
    10 steps, α = ε/10, μ = 1. Measured when written on all 397 test digits: I-FGSM 0.948,
    MI-FGSM 0.982 over the 382 correct ones (Fashion-MNIST CNN: 0.623 vs 0.903, bench/GEOMETRY.md)."""
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    before, x0 = snapshot(cnn_model), x.clone()
    cos = perturbation_cosine_similarity(cnn_model, x, y, attacks=default_cosine_attacks(0.1, 10))
    assert_unchanged(cnn_model, before)
    assert torch.equal(x, x0)
    with torch.no_grad():
        correct = cnn_model(x).argmax(1) == y
    assert cos.n == 120 and cos.n_used == int(correct.sum())
    i_mean, mi_mean = cos.mean("I-FGSM"), cos.mean("MI-FGSM")
    assert -1 <= i_mean <= 1 and -1 <= mi_mean <= 1
    assert mi_mean > i_mean
    assert mi_mean > i_mean + 0.01 and cos.mean("MI-FGSM", of="direction") > cos.mean("I-FGSM", of="direction")
    assert cos.per_step("I-FGSM").shape == (9,)
    assert int((cos.per_step("MI-FGSM") > cos.per_step("I-FGSM")).sum()) >= 7
    # the success flags are the attacks' own on the same points
    res = IFGSM(eps=0.1, steps=10)(cnn_model, x[correct], y[correct])
    assert torch.equal(cos.success["I-FGSM"], res.success)
    s = cos.summary()["attacks"]["MI-FGSM"]
    assert s["mean_update_cosine"] == pytest.approx(mi_mean) and len(s["per_step_update_cosine"]) == 9
