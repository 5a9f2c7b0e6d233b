"""Substitute training (Papernot et al. 2017), transfer attacks and transferability matrices.

Oracle: the digits CNN of conftest behind ``Oracle(output="label")``. Seed set: the first 10 test
images of each class (100 points); held-out points: the other 297 test images.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks.gradient import FGSM, IFGSM, MIFGSM, PGD
from advlab.attacks.transfer import (TransferAttack, TransferResult, jacobian_augmentation,
                                     train_substitute)
from advlab.evaluation.transfer import transfer_matrix
from advlab.models import Ensemble
from advlab.oracle import Oracle
from advlab.threat import ThreatModel


@pytest.fixture(scope="module")
def split(digits):
    xt, yt = digits["x_test"], digits["y_test"]
    idx = torch.cat([(yt == c).nonzero().flatten()[:10] for c in range(10)])
    rest = torch.ones(len(yt), dtype=torch.bool)
    rest[idx] = False
    return {"seed_x": xt[idx], "hold_x": xt[rest], "hold_y": yt[rest]}


@pytest.fixture(scope="module")
def substitute(cnn_model, split):
    """small-cnn substitute of the digits CNN: 100 seed points, 4 rounds, λ = 0.1 (800 labels)."""
    oracle = Oracle(cnn_model, output="label")
    before = snapshot(cnn_model)
    rng = torch.random.get_rng_state()
    seed_x = split["seed_x"].clone()
    result = train_substitute(oracle, split["seed_x"], architecture="small-cnn", rounds=4, lambda_=0.1,
                              epochs=10, holdout_x=split["hold_x"], keep_round_models=True, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert_unchanged(cnn_model, before)
    assert torch.equal(split["seed_x"], seed_x)
    return oracle, result


@pytest.fixture(scope="module")
def attack_points(cnn_model, split):
    """Held-out points the target classifies correctly (not in the seed set)."""
    x, y = split["hold_x"], split["hold_y"]
    with torch.no_grad():
        ok = cnn_model(x).argmax(1) == y
    return x[ok][:200], y[ok][:200]


# -- substitute training --------------------------------------------------------------------------


def test_substitute_reaches_agreement_with_stated_queries(substitute):
    oracle, result = substitute
    # 100 seed points doubled after each of the 3 augmentations: 100 · 2^3 labels
    assert result.queries == 800 == oracle.total_queries
    assert result.queries_per_round == [100, 100, 200, 400]
    assert result.dataset_sizes == [100, 200, 400, 800] == result.cumulative_queries
    assert result.holdout_queries == 297  # asked through a separate evaluation copy, not counted
    agree = result.agreement_per_round
    assert len(agree) == 4
    # measured: 0.367, 0.714, 0.859, 0.906 (CPU, torch 2.x)
    assert agree[-1] >= 0.85
    assert agree[-1] > agree[0] + 0.3
    assert not result.model.training
    assert not result.budget_exhausted
    assert [r["queries"] for r in result.to_rows()] == [100, 200, 400, 800]


def test_augmentation_is_the_jacobian_step_of_each_round(substitute, split):
    """Every point added after round ρ is clip(parent + λ_ρ sign(∂F_ỹ/∂x)) for the substitute of
    round ρ, and the labels are the oracle's."""
    oracle, result = substitute
    x, y, parents = result.x, result.y, result.parents
    sizes = result.dataset_sizes
    assert torch.equal(x[:100], split["seed_x"]) and bool((parents[:100] == -1).all())
    for rho in range(len(sizes) - 1):
        new = torch.arange(sizes[rho], sizes[rho + 1])
        assert bool((parents[new] < sizes[rho]).all()) and bool((parents[new] >= 0).all())
        expected = jacobian_augmentation(result.round_models[rho], x[parents[new]], y[parents[new]],
                                         step=result.lambdas[rho])
        assert torch.equal(x[new], expected)
        diff = (x[new] - x[parents[new]]).abs()
        clipped = (x[new] == 0) | (x[new] == 1)
        assert bool((((diff - 0.1).abs() < 1e-6) | clipped | (diff == 0)).all())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_labels_are_the_oracle_answers(cnn_model, substitute):
    _, result = substitute
    with torch.no_grad():
        assert torch.equal(result.y, cnn_model(result.x).argmax(1))


def test_jacobian_augmentation_closed_form_on_a_linear_model(linear_model, digits):
    """For logits W x + b, ∂F_y/∂x = W_y: the new point is clip(x + λ sign(W_y))."""
    x, y = digits["x_test"][:50], digits["y_test"][:50]
    w = linear_model[1].weight.detach()  # (10, 64)
    before = snapshot(linear_model)
    for step in (0.1, -0.07):
        expected = (x + step * w[y].sign().view(-1, 1, 8, 8)).clamp(0, 1)
        got = jacobian_augmentation(linear_model, x, y, step=step, batch_size=16)
        assert torch.equal(got, expected)
    assert_unchanged(linear_model, before)


def test_periodic_step_flips_sign_every_tau_rounds(cnn_model, split):
    oracle = Oracle(cnn_model, output="label")
    result = train_substitute(oracle, split["seed_x"][::2], architecture="mlp", rounds=6, lambda_=0.05,
                              tau=2, epochs=1)
    assert result.lambdas == [0.05, 0.05, -0.05, -0.05, 0.05]


def test_reservoir_sampling_caps_query_growth(cnn_model, split):
    oracle = Oracle(cnn_model, output="label")
    seed_x = split["seed_x"][::2]  # 50 points
    result = train_substitute(oracle, seed_x, architecture="mlp", rounds=6, epochs=1,
                              reservoir_size=30, reservoir_start=2)
    # n · 2^σ, then κ more per round: 50, 100, 200, 230, 260, 290
    assert result.dataset_sizes == [50, 100, 200, 230, 260, 290]
    assert result.queries == 290 == oracle.total_queries
    # reservoir rounds augment distinct points of the current set
    later = result.parents[200:230]
    assert later.unique().numel() == 30 and bool((later < 200).all())


@settings(max_examples=12, deadline=None)
@given(budget=st.integers(min_value=40, max_value=700), rounds=st.integers(min_value=1, max_value=5),
       output=st.sampled_from(["label", "scores"]))
def test_queries_equal_labels_asked_and_never_exceed_the_budget(cnn_model, digits, budget, rounds, output):
    seed_x = digits["x_test"][:40]
    oracle = Oracle(cnn_model, output=output, budget=budget)
    result = train_substitute(oracle, seed_x, architecture="mlp", rounds=rounds, epochs=1, seed=1)
    unconstrained = 40 * 2 ** (rounds - 1)
    assert result.queries == oracle.total_queries == sum(result.queries_per_round) == result.x.shape[0]
    assert result.queries <= budget
    assert result.budget_exhausted == (unconstrained > budget)
    if result.budget_exhausted:
        assert result.queries == budget  # the last augmentation is cut to exactly the budget left
        assert result.rounds == len(result.queries_per_round)  # it trained once more on the paid labels
    else:
        assert result.queries == unconstrained
    assert result.x.shape[0] == result.y.shape[0] == result.parents.shape[0]


def test_label_and_scores_oracles_give_the_same_substitute(cnn_model, digits):
    seed_x = digits["x_test"][:30]
    common = dict(architecture="mlp", rounds=3, epochs=2, seed=3)
    a = train_substitute(Oracle(cnn_model, output="label"), seed_x, **common)
    probs = Oracle(lambda t: torch.softmax(cnn_model(t), 1).numpy(), output="scores")
    b = train_substitute(probs, seed_x, **common)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_from_scratch_and_factory_architecture(cnn_model, digits):
    def factory() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    oracle = Oracle(cnn_model, output="label")
    r = train_substitute(oracle, digits["x_test"][:30], architecture=factory, rounds=2, epochs=3,
                         from_scratch=True, keep_round_models=True)
    assert isinstance(r.model, nn.Sequential) and len(r.round_models) == 2
    # from scratch: round 1 restarts from the same initialisation, so training it again on S_1
    # from a fresh factory model (same seed) reproduces it exactly
    again = train_substitute(Oracle(cnn_model, output="label"), digits["x_test"][:30],
                             architecture=factory, rounds=2, epochs=3, from_scratch=True)
    for p, q in zip(r.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x[:0], "empty"),
    (lambda x: x.flatten(1), r"\(N, C, H, W\)"),
    (lambda x: x * 2, "outside the bounds"),
    (lambda x: x.clone().fill_(float("nan")), "NaN"),
    (lambda x: (x * 16).long(), "floating-point"),
])
def test_bad_seed_sets(cnn_model, digits, bad, match):
    oracle = Oracle(cnn_model, output="label")
    with pytest.raises((ValueError, TypeError), match=match):
        train_substitute(oracle, bad(digits["x_test"][:10]), rounds=1)
    assert oracle.total_queries == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(rounds=0), "rounds"), (dict(lambda_=0.0), "lambda_"), (dict(tau=0), "tau"),
    (dict(epochs=0), "epochs"), (dict(reservoir_size=0), "reservoir_size"),
    (dict(architecture="vgg"), "unknown architecture"), (dict(bounds=(-1.0, 1.0)), r"\[0, 1\]"),
    (dict(holdout_x=torch.rand(4, 1, 7, 7)), "holdout_x"),
])
def test_bad_substitute_settings(cnn_model, digits, kwargs, match):
    oracle = Oracle(cnn_model, output="label")
    with pytest.raises((ValueError, TypeError), match=match):
        train_substitute(oracle, digits["x_test"][:10], **kwargs)
    assert oracle.total_queries == 0  # refused before any label is asked


def test_budget_smaller_than_the_seed_set_and_models_are_refused(cnn_model, digits):
    with pytest.raises(ValueError, match="smaller than the seed set"):
        train_substitute(Oracle(cnn_model, output="label", budget=5), digits["x_test"][:10])
    with pytest.raises(TypeError, match="Oracle"):
        train_substitute(cnn_model, digits["x_test"][:10])


# -- the transfer attack --------------------------------------------------------------------------


def test_transfer_attack_queries_once_and_stays_in_the_threat_model(cnn_model, substitute, attack_points):
    _, sub = substitute
    x, y = attack_points
    x0, y0 = x.clone(), y.clone()
    before_t, before_s = snapshot(cnn_model), snapshot(sub.model)
    rng = torch.random.get_rng_state()
    oracle = Oracle(cnn_model, output="label", budget=1)
    attack = TransferAttack(attack=MIFGSM(eps=0.2, steps=10), source=sub.model)
    res = attack(oracle, x, y)
    assert isinstance(res, TransferResult)
    tm = ThreatModel(norm="linf", eps=0.2)
    assert bool(tm.contains(res.x_adv, x).all()) and res.threat == tm
    assert float(res.norms.max()) <= 0.2 + 1e-6
    assert torch.equal(res.queries, torch.ones(len(y), dtype=torch.long))
    assert oracle.total_queries == len(y)
    assert not bool(res.target.budget_exhausted.any())
    assert int(res.target.num_grads.sum()) == 0 and int(res.source.num_grads.sum()) == 10 * len(y)
    # the verdict is the target's, the crafting the source's white-box attack
    with torch.no_grad():
        assert torch.equal(res.pred, cnn_model(res.x_adv).argmax(1))
    assert torch.equal(res.success, res.pred != y)
    direct = MIFGSM(eps=0.2, steps=10)(sub.model, x, y)
    assert torch.equal(direct.x_adv, res.x_adv) and torch.equal(direct.success, res.source_success)
    assert torch.isnan(res.target.confidence).all()
    assert "TransferAttack(attack=MIFGSM(" in res.target.attack and "SmallCNN" in res.target.attack
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert_unchanged(cnn_model, before_t)
    assert_unchanged(sub.model, before_s)
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_transfer_beats_random_noise_of_the_same_norm(cnn_model, substitute, attack_points):
    """Measured (200 correctly classified held-out digits, substitute with 800 labels):
    ε = 0.2: FGSM 0.67, I-FGSM 0.67, MI-FGSM 0.68 vs random ±ε sign noise 0.09;
    ε = 0.1: about 0.16 vs 0.02."""
    _, sub = substitute
    x, y = attack_points
    g = torch.Generator().manual_seed(0)
    for eps, floor, margin in ((0.2, 0.5, 0.35), (0.1, 0.1, 0.08)):
        noise = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).float() * eps
        with torch.no_grad():
            noise_rate = float((cnn_model((x + noise).clamp(0, 1)).argmax(1) != y).float().mean())
        for a in (FGSM(eps=eps), IFGSM(eps=eps, steps=10), MIFGSM(eps=eps, steps=10)):
            rate = TransferAttack(attack=a, source=sub.model)(Oracle(cnn_model, output="label"), x, y).success_rate
            assert rate >= floor and rate >= noise_rate + margin, (eps, a, rate, noise_rate)


def test_transfer_from_an_ensemble_and_targeted(cnn_model, linear_model, mlp_model, attack_points):
    x, y = attack_points[0][:60], attack_points[1][:60]
    ens = Ensemble([linear_model, mlp_model])
    t = (y + 1) % 10
    res = TransferAttack(attack=IFGSM(eps=0.3, steps=10), source=ens)(
        Oracle(cnn_model, output="scores"), x, y, target=t)
    assert res.threat.targeted and torch.equal(res.target.target, t)
    direct = IFGSM(eps=0.3, steps=10)(ens, x, y, target=t)
    assert torch.equal(direct.x_adv, res.x_adv)
    with torch.no_grad():
        logits = cnn_model(res.x_adv)
    assert torch.equal(res.success, logits.argmax(1) == t)
    assert torch.allclose(res.target.confidence, torch.softmax(logits, 1).amax(1))
    assert res.success_rate > 0.5  # measured 0.75 (white-box on the ensemble 0.97)


def test_transfer_attack_bad_input(cnn_model, mlp_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    attack = TransferAttack(attack=FGSM(eps=0.1), source=mlp_model)
    with pytest.raises(TypeError, match="Oracle"):
        attack(cnn_model, x, y)
    with pytest.raises(TypeError, match="not the class"):
        TransferAttack(attack=FGSM, source=mlp_model)
    with pytest.raises(TypeError, match="source"):
        TransferAttack(attack=FGSM(eps=0.1), source=Oracle(mlp_model))
    with pytest.raises(TypeError, match="nn.Module"):
        TransferAttack(attack=FGSM(eps=0.1), source=lambda t: t)
    oracle = Oracle(cnn_model, output="label")
    with pytest.raises(ValueError, match="outside the bounds"):
        attack(oracle, x * 3, y)
    with pytest.raises(ValueError, match="shape"):
        attack(oracle, x, y[:2])
    assert oracle.total_queries == 0


def test_transfer_attack_runs_the_lifecycle_with_any_criterion(cnn_model, mlp_model, digits):
    """A label-only black-box attack: its success is the criterion on the oracle's one answer per
    point, and a criterion that reads probabilities is refused before the oracle is asked."""
    from advlab.attacks.contract import Attack
    from advlab.attacks.criteria import ConfidenceBelow, Misclassified, NotRejected

    x, y = digits["x_test"][:30], digits["y_test"][:30]
    attack = TransferAttack(attack=FGSM(eps=0.2), source=mlp_model)
    assert isinstance(attack, Attack) and attack.access == "labels" and attack.kind == "bounded"
    oracle = Oracle(cnn_model, output="label")
    res = attack(oracle, x, y, criterion=Misclassified() & NotRejected(reject_class=3))
    with torch.no_grad():
        pred = cnn_model(res.x_adv).argmax(1)
    assert torch.equal(res.pred, pred) and torch.equal(res.success, (pred != y) & (pred != 3))
    assert torch.equal(res.x_adv, FGSM(eps=0.2)(mlp_model, x, y).x_adv)
    assert oracle.total_queries == len(y)
    scores = Oracle(cnn_model, output="scores")
    with pytest.raises(ValueError, match="reads probabilities"):
        attack(scores, x, y, criterion=ConfidenceBelow(0.5))
    assert scores.total_queries == 0


# -- transferability matrix -----------------------------------------------------------------------


def test_transfer_matrix_diagonal_and_denominators(linear_model, mlp_model, cnn_model, digits):
    x, y = digits["x_test"][:150], digits["y_test"][:150]
    models = {"logreg": linear_model, "mlp": mlp_model, "cnn": cnn_model}
    before = {k: snapshot(m) for k, m in models.items()}
    rng = torch.random.get_rng_state()
    x0 = x.clone()
    attack = FGSM(eps=0.1)
    m = transfer_matrix(models, models, attack, x, y, batch_size=64)
    assert len(m.to_rows()) == 9
    for s, src in models.items():
        with torch.no_grad():
            src_ok = src(x).argmax(1) == y
        direct = torch.cat([attack(src, x[i:i + 64], y[i:i + 64]).success for i in range(0, 150, 64)])
        wb = m.white_box[s]
        assert wb.correct == int(src_ok.sum())
        assert wb.fooled == int((direct & src_ok).sum())  # the attack's own verdict
        assert m.cell(s, s).transferred == wb.fooled and m.cell(s, s).target_correct == wb.correct
        assert m.rate(s, s) == wb.rate
        x_adv = torch.cat([attack(src, x[i:i + 64], y[i:i + 64]).x_adv for i in range(0, 150, 64)])
        for t, tgt in models.items():
            with torch.no_grad():
                ok, hit = tgt(x).argmax(1) == y, tgt(x_adv).argmax(1) != y
            c = m.cell(s, t)
            assert c.target_correct == int(ok.sum())
            assert c.transferred == int((ok & hit).sum())
            assert c.source_fooled == int((ok & direct).sum())
            assert c.transferred_source_fooled == int((ok & hit & direct).sum())
            assert c.rate == c.transferred / c.target_correct
    assert m.clean_accuracy["cnn"] == float((cnn_model(x).argmax(1) == y).float().mean())
    # transfer is weaker than white-box off the diagonal on these models (measured: all cells)
    for s in models:
        assert all(m.rate(s, t) <= m.white_box[s].rate + 1e-12 for t in models)
    table = m.table()
    assert "over the points the TARGET classifies correctly" in table
    c = m.cell("cnn", "logreg")
    assert f"({c.transferred}/{c.target_correct})" in table
    assert torch.equal(x, x0) and torch.equal(torch.random.get_rng_state(), rng)
    for k, mod in models.items():
        assert_unchanged(mod, before[k])


def test_transfer_matrix_bad_input(linear_model, mlp_model, digits):
    x, y = digits["x_test"][:8], digits["y_test"][:8]
    with pytest.raises(TypeError, match="non-empty dict"):
        transfer_matrix({}, {"a": linear_model}, FGSM(eps=0.1), x, y)
    with pytest.raises(ValueError, match="different models"):
        transfer_matrix({"a": linear_model}, {"a": mlp_model}, FGSM(eps=0.1), x, y)
    with pytest.raises(TypeError, match="attack"):
        transfer_matrix({"a": linear_model}, {"b": mlp_model}, FGSM, x, y)
    with pytest.raises(ValueError, match="outside the bounds"):
        transfer_matrix({"a": linear_model}, {"b": mlp_model}, FGSM(eps=0.1), x + 2, y)
    with pytest.raises(TypeError, match="nn.Module"):
        transfer_matrix({"a": "model"}, {"b": mlp_model}, FGSM(eps=0.1), x, y)


def test_transfer_matrix_with_random_start_is_seeded(linear_model, mlp_model, digits):
    x, y = digits["x_test"][:40], digits["y_test"][:40]
    a = transfer_matrix({"mlp": mlp_model}, {"lr": linear_model}, PGD(eps=0.1, steps=3), x, y, seed=5)
    b = transfer_matrix({"mlp": mlp_model}, {"lr": linear_model}, PGD(eps=0.1, steps=3), x, y, seed=5)
    assert a.to_rows() == b.to_rows()
    assert torch.equal(a.per_point["mlp->lr"], b.per_point["mlp->lr"])


def test_jacobian_augmentation_bad_input(linear_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    with pytest.raises(ValueError, match="step"):
        jacobian_augmentation(linear_model, x, y, step=float("nan"))
    with pytest.raises(ValueError, match="labels"):
        jacobian_augmentation(linear_model, x, y[:2], step=0.1)
