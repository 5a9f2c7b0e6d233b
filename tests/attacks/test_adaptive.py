"""BPDA and EOT (Athalye, Carlini & Wagner 2018): the input-quantised and the randomised models
resist plain PGD and fall to the adaptive attacks; the audit finds and says so (issue #13, item 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import BPDA, EOT, PGD
from advlab.defenses import Quantize, RandomNoise
from advlab.evaluation import audit


@pytest.fixture(scope="module")
def points(digits, mlp_model):
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    with torch.no_grad():
        keep = mlp_model(x).argmax(1) == y
    return x[keep], y[keep]


def _rate(result) -> float:
    return float(result.success.float().mean())


def test_bpda_forward_is_exactly_the_defended_model(mlp_model, points):
    x, _ = points
    q = Quantize(levels=4)
    defended = nn.Sequential(q, mlp_model).eval()
    with torch.no_grad():
        assert torch.equal(BPDA(q, mlp_model)(x), defended(x))
    # the gradient is the identity approximation's: that of the classifier at the quantised point
    xg = x[:5].clone().requires_grad_(True)
    BPDA(q, mlp_model)(xg).sum().backward()
    zq = q(x[:5]).clone().requires_grad_(True)
    mlp_model(zq).sum().backward()
    torch.testing.assert_close(xg.grad, zq.grad)
    # while the defended model's own gradient is zero
    xd = x[:5].clone().requires_grad_(True)
    defended(xd).sum().backward()
    assert bool((xd.grad == 0).all())


def test_the_quantised_model_masks_pgd_and_falls_to_bpda(mlp_model, points):
    x, y = points
    q = Quantize(levels=4)
    defended = nn.Sequential(q, mlp_model).eval()
    before = snapshot(defended)
    attack = PGD(eps=0.15, steps=20)
    plain = attack(defended, x, y)
    adaptive = attack(BPDA(q, mlp_model), x, y)
    assert_unchanged(defended, before)
    assert _rate(plain) < 0.05                 # a zero gradient: PGD cannot move
    assert _rate(adaptive) > 0.5               # through BPDA it breaks most points
    # successes through the wrapper are successes on the defended model itself, inside the ball
    with torch.no_grad():
        pred = defended(adaptive.x_adv).argmax(1)
    assert torch.equal(pred != y, adaptive.success)
    assert float((adaptive.x_adv - x).abs().amax()) <= 0.15 + 1e-6


def test_the_randomised_model_falls_further_under_eot(mlp_model, points):
    """Judged by the expected prediction (32 fresh samples, another seed), PGD through EOT's 16
    samples breaks clearly more points than PGD on one noisy forward pass per step (measured
    here while writing this test, σ = 0.5: 0.35 vs 0.47 on another MLP)."""
    x, y = points
    noisy = RandomNoise(mlp_model, sigma=0.5, seed=0).eval()
    judge = EOT(RandomNoise(mlp_model, sigma=0.5, seed=1).eval(), samples=32)
    with torch.no_grad():
        keep = judge(x).argmax(1) == y
    xs, ys = x[keep], y[keep]
    attack = PGD(eps=0.1, steps=10)
    single = attack(noisy, xs, ys, generator=torch.Generator().manual_seed(0)).x_adv
    expected = attack(EOT(noisy, samples=16), xs, ys, generator=torch.Generator().manual_seed(0)).x_adv
    with torch.no_grad():
        s_single = float((judge(single).argmax(1) != ys).float().mean())
        s_eot = float((judge(expected).argmax(1) != ys).float().mean())
    assert s_eot > s_single + 0.05, (s_eot, s_single)


def test_eot_of_a_deterministic_model_is_the_model(mlp_model, points):
    x, _ = points
    with torch.no_grad():
        torch.testing.assert_close(EOT(mlp_model, samples=3)(x), mlp_model(x))
        probs = torch.softmax(EOT(mlp_model, samples=3, average="probs")(x), 1)
        torch.testing.assert_close(probs, torch.softmax(mlp_model(x), 1))


def test_the_audit_re_attacks_a_quantised_model_with_bpda_and_reports_the_hidden_vulnerability(mlp_model, digits):
    defended = nn.Sequential(Quantize(levels=4), mlp_model).eval()
    rep = audit(defended, digits["x_test"][:120], digits["y_test"][:120], eps=0.15, steps=10, max_points=120)
    assert not rep.check("gradients").passed
    check = rep.check("adaptive_attack")
    assert not check.passed and check.values["method"] == "BPDA (identity) through layer 0 (Quantize)"
    assert check.values["success"] > check.values["plain_success"] + 0.3
    assert "hid real vulnerability" in check.advice


def test_the_audit_re_attacks_a_randomised_model_with_eot(mlp_model, digits):
    noisy = RandomNoise(mlp_model, sigma=0.5, seed=0).eval()
    rep = audit(noisy, digits["x_test"][:120], digits["y_test"][:120], eps=0.1, steps=10, max_points=120,
                eot_samples=16)
    assert not rep.check("deterministic").passed
    check = rep.check("adaptive_attack")
    assert check.values["method"] == "EOT over 16 samples"
    # both judged by the expected prediction: EOT finds what one noisy sample per step hides
    assert check.values["success"] > check.values["plain_success"] + 0.02
    assert not check.passed


def test_an_honest_model_gets_no_adaptive_check(mlp_model, digits):
    rep = audit(mlp_model, digits["x_test"][:80], digits["y_test"][:80], eps=0.1, steps=5, max_points=80)
    assert rep.check("gradients").passed and rep.check("deterministic").passed
    with pytest.raises(KeyError):
        rep.check("adaptive_attack")


def test_bad_input_is_a_clear_error(mlp_model):
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        EOT(mlp_model, samples=0)
    with pytest.raises(ValueError, match="average must be"):
        EOT(mlp_model, average="median")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        BPDA(Quantize(), "not a model")
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        Quantize(levels=1)
    with pytest.raises(ValueError, match="sigma must be a number > 0"):
        RandomNoise(mlp_model, sigma=0)
    pool = nn.AvgPool2d(2)   # changes the shape: the identity cannot approximate it
    with pytest.raises(ValueError, match="the approximation must match the preprocessing's output"):
        BPDA(pool, nn.Sequential(nn.Flatten(), nn.Linear(16, 10)))(torch.rand(2, 1, 8, 8))
