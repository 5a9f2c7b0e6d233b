"""Ensembles fused in logits, predictions or loss (Dong et al. 2018, Algorithm 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, FMN, IFGSM, MIFGSM, PGD, CarliniWagnerL2, DeepFool
from advlab.losses import cross_entropy, objective
from advlab.models.ensemble import Ensemble


@pytest.fixture(scope="module")
def members(linear_model, cnn_model, mlp_model):
    return [linear_model, cnn_model, mlp_model]


def test_logit_fusion_is_the_weighted_sum(members, digits):
    x = digits["x_test"][:20]
    ens = Ensemble(members, weights=[1, 2, 1], fusion="logits").eval()
    with torch.no_grad():
        expected = 0.25 * members[0](x) + 0.5 * members[1](x) + 0.25 * members[2](x)
        assert torch.allclose(ens(x), expected, atol=1e-5)


def test_prediction_fusion_returns_log_of_averaged_probabilities(members, digits):
    x = digits["x_test"][:20]
    ens = Ensemble(members, weights=[1, 1, 2], fusion="predictions").eval()
    with torch.no_grad():
        p = sum(w * torch.softmax(m(x), 1) for w, m in zip([0.25, 0.25, 0.5], members))
        assert torch.allclose(ens(x).exp(), p, atol=1e-6)
        assert torch.allclose(torch.softmax(ens(x), 1), p, atol=1e-6)


def test_loss_fusion_objective_and_gradient_are_the_weighted_sum(members, digits):
    x, y = digits["x_test"][:20].clone().requires_grad_(True), digits["y_test"][:20]
    ens = Ensemble(members, weights=[3, 1, 1], fusion="loss").eval()
    obj, _ = objective(ens, x, y, None, cross_entropy)
    expected = sum(w * cross_entropy(m(x), y) for w, m in zip([0.6, 0.2, 0.2], members))
    assert torch.allclose(obj, expected, atol=1e-6)
    g1, = torch.autograd.grad(obj.sum(), x)
    g2, = torch.autograd.grad(expected.sum(), x)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_the_three_fusions_give_different_attacks(members, digits):
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    outs = {f: MIFGSM(eps=0.1, steps=5)(Ensemble(members, fusion=f), x, y).x_adv
            for f in ("logits", "predictions", "loss")}
    assert not torch.equal(outs["logits"], outs["predictions"])
    assert not torch.equal(outs["logits"], outs["loss"])


@pytest.mark.parametrize("fusion", ["logits", "predictions", "loss"])
@pytest.mark.parametrize("attack", [FGSM(eps=0.15), IFGSM(eps=0.15, steps=5), PGD(eps=0.15, steps=5),
                                    MIFGSM(eps=0.15, steps=5)])
def test_every_gradient_attack_runs_on_every_fusion(members, digits, fusion, attack):
    x, y = digits["x_test"][:100], digits["y_test"][:100]
    ens = Ensemble(members, fusion=fusion)
    r = attack(ens, x, y)
    assert r.threat.contains(r.x_adv, x).all()
    with torch.no_grad():
        assert torch.equal(ens(r.x_adv).argmax(1), r.pred)
        clean_wrong = (ens(x).argmax(1) != y).float().mean()
    assert r.success_rate > clean_wrong + 0.2  # it attacks the ensemble, not just keeps errors


def test_ensemble_attack_transfers_better_to_its_members_than_a_single_source(members, digits):
    """White-box on the ensemble fools each member more often than FGSM on clean data does."""
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    r = MIFGSM(eps=0.15, steps=10)(Ensemble(members, fusion="logits"), x, y)
    with torch.no_grad():
        for m in members:
            assert (m(r.x_adv).argmax(1) != y).float().mean() > 0.5


def test_bad_ensembles():
    m = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(ValueError, match="fusion"):
        Ensemble([m], fusion="votes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        Ensemble([m, m], weights=[1, -1])
    with pytest.raises(ValueError, match="2 models"):
        Ensemble([m, m], weights=[1])
    with pytest.raises(TypeError, match="nn.Module"):
        Ensemble([m, "model"])  # type: ignore[list-item]
    ens = Ensemble([nn.Linear(3, 2), nn.Linear(3, 4)])
    with pytest.raises(ValueError, match="output shapes"):
        ens(torch.zeros(1, 3))


# -- loss fusion in the minimal-perturbation attacks (it used to fall back to logits silently) -------


def _member_margin_sum(members, weights, x, y):
    """The hand-computed loss-fusion objective: Σ_k w_k · margin_k(x), w normalised."""
    from advlab.losses import cw_margin

    w = torch.tensor(weights, dtype=torch.float32) / sum(weights)
    return sum(wk * cw_margin(m(x), y, None) for wk, m in zip(w, members))


@pytest.mark.parametrize("make", [lambda: CarliniWagnerL2(steps=50, binary_search_steps=1, c_init=10.0, abort_early=False),
                                  lambda: FMN(norm="l2", steps=20)])
def test_minimal_attacks_honour_loss_fusion(members, digits, make):
    x, y = digits["x_test"][:24], digits["y_test"][:24]
    weights = [3.0, 1.0, 1.0]
    by = {f: make()(Ensemble(members, weights=weights, fusion=f), x, y).x_adv for f in ("logits", "loss")}
    # fused in loss, the attack follows the members' weighted margins, not the weighted logits' margin
    assert not torch.equal(by["logits"], by["loss"])
    # and its objective is the hand-computed one
    from advlab.attacks.minimal import _margin

    ens = Ensemble(members, weights=weights, fusion="loss").eval()
    obj, _, logits = _margin(ens, x, y, None)
    assert torch.allclose(obj, _member_margin_sum(members, weights, x, y), atol=1e-5)
    assert torch.allclose(logits, ens(x))


def test_deepfool_refuses_loss_fusion_with_the_fix(members, digits):
    x, y = digits["x_test"][:8], digits["y_test"][:8]
    with pytest.raises(ValueError, match="fused in loss.*fusion='logits'"):
        DeepFool()(Ensemble(members, fusion="loss"), x, y)
    assert DeepFool(steps=3)(Ensemble(members, fusion="logits"), x, y).x_adv.shape == x.shape


# -- loss fusion in the universal attacks (UAP and the patch used to attack the fused logits) -------


@pytest.fixture(scope="module")
def pair(linear_model, cnn_model):
    return [linear_model, cnn_model], [3.0, 1.0]


def test_sgd_uap_ascends_the_members_weighted_loss(pair, digits):
    from advlab.attacks import UniversalPerturbation

    members, weights = pair
    x = digits["x_train"][:64]
    fit = UniversalPerturbation(norm="linf", eps=0.3, method="sgd", max_epochs=1, batch_size=64,
                                step_size=0.3, target_fooling=1.0)
    by = {f: fit(Ensemble(members, weights=weights, fusion=f), x, generator=torch.Generator().manual_seed(0))
          for f in ("logits", "loss")}
    assert by["loss"].fooling_rate > by["loss"].base_rate  # the one pass is kept, not v = 0
    assert not torch.equal(by["logits"].perturbation, by["loss"].perturbation)
    # by hand: one step of ε · sign(∇_v mean_i Σ_k w_k CE(m_k(x_i + v), ŷ_i)) from v = 0, over the
    # points in the order the generator shuffles them (ŷ: the ensemble's clean prediction)
    ens = Ensemble(members, weights=weights, fusion="loss").eval()
    with torch.no_grad():
        labels = ens(x).argmax(1)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    v = torch.zeros_like(x[0]).requires_grad_(True)
    xb = (x[order] + v).clamp(0, 1)
    w = torch.tensor(weights) / sum(weights)
    obj = sum(wk * cross_entropy(m(xb), labels[order]) for wk, m in zip(w, members))
    g, = torch.autograd.grad(obj.mean(), v)
    ref = 0.3 * g.sign()
    agree = (by["loss"].perturbation == ref).float().mean()
    assert float(agree) >= 0.99, float(agree)  # up to the sign of float-noise-sized gradients


def test_deepfool_uap_refuses_loss_fusion(pair, digits):
    from advlab.attacks import UniversalPerturbation

    members, weights = pair
    x = digits["x_train"][:16]
    for target_class in (None, 3):
        with pytest.raises(ValueError, match="UniversalPerturbation.*deepfool.*fused in loss.*method='sgd'"):
            UniversalPerturbation(eps=0.3, max_epochs=1, target_class=target_class)(
                Ensemble(members, weights=weights, fusion="loss"), x)
    res = UniversalPerturbation(eps=0.3, max_epochs=1)(Ensemble(members, fusion="logits"), x)
    assert res.perturbation.shape == x.shape[1:]


def test_patch_ascends_the_members_weighted_log_probability(pair, digits):
    from advlab.attacks.patch import AdversarialPatch, paste, patch_mask, sample_placements

    members, weights = pair
    x, y = digits["x_train"][:40], digits["y_train"][:40]
    fit = AdversarialPatch(target_class=2, patch_size=3, steps=1, batch_size=16, step_size=0.05,
                           eval_samples=1)
    by = {f: fit(Ensemble(members, weights=weights, fusion=f), x, y, generator=torch.Generator().manual_seed(0))
          for f in ("logits", "loss")}
    assert not torch.equal(by["logits"].patch, by["loss"].patch)
    # by hand: the generator's draws (initial patch, minibatch, placements), then one Adam step on
    # mean_i Σ_k w_k log p_k(t | A(p, x_i, τ_i)); Adam's first step is lr · g / (|g| + 1e-8)
    g = torch.Generator().manual_seed(0)
    xs = x[y != 2]
    p0 = torch.rand(1, 3, 3, generator=g)
    idx = torch.randint(0, xs.shape[0], (16,), generator=g)
    pl = sample_placements(16, 3, (8, 8), rotation=fit.rotation, scale=fit.scale, random_location=True,
                           generator=g)
    p = p0.clone().requires_grad_(True)
    xp, _ = paste(xs[idx], p, patch_mask(3, "square"), pl)
    w = torch.tensor(weights) / sum(weights)
    obj = sum(wk * torch.log_softmax(m(xp), 1)[:, 2] for wk, m in zip(w, members)).mean()
    grad, = torch.autograd.grad(obj, p)
    ref = (p0 + 0.05 * grad / (grad.abs() + 1e-8)).clamp(0, 1)
    assert torch.allclose(by["loss"].patch, ref, atol=1e-6)
