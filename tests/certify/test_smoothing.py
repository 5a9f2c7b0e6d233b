"""Randomized smoothing (Cohen et al. 2019; issue #13, item 5): the closed form on a linear model,
a certificate no attack breaks, abstention, determinism, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import assert_unchanged, snapshot, linear_two_class
from advlab.attacks import EOT, PGD
from advlab.certify import SmoothedClassifier
from advlab.defenses import GaussianNoise, RandomNoise, train
from advlab.models import build_seeded




def test_on_a_linear_model_the_radius_approaches_the_distance_to_the_boundary():
    """For f(x) = argmax(Wx + b) with two classes, g = f and p_A = Φ(|w·x+b| / (σ||w||)): the
    exact certified radius σΦ⁻¹(p_A) is the distance to the hyperplane. The certificate (a lower
    confidence bound) must never exceed it and, with n = 20,000, come within 15% of it."""
    model = linear_two_class()
    w = (model[1].weight[1] - model[1].weight[0]).detach()
    b = (model[1].bias[1] - model[1].bias[0]).detach()
    x = 0.3 + 0.4 * torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    dist = ((x.flatten(1) @ w + b).abs() / w.norm()).double()
    sigma = 0.25
    keep = dist < 2.5 * sigma          # p_A < Φ(2.5): the bound is informative there
    x, dist = x[keep], dist[keep]
    assert x.shape[0] >= 8
    cert = SmoothedClassifier(sigma=sigma, n0=100, n=20_000, alpha=0.001).certify(
        model, x, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(cert.pred[cert.pred >= 0], model(x).argmax(1)[cert.pred >= 0])
    assert bool((cert.radius <= dist + 1e-9).all())
    far = dist > 0.3 * sigma
    ratio = cert.radius[far] / dist[far]
    assert float(ratio.min()) >= 0.85, ratio


@pytest.fixture(scope="module")
def smoothed_mlp(digits):
    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    train(model, GaussianNoise(sigma=0.25), digits["x_train"], digits["y_train"], epochs=8, batch_size=64,
          lr=2e-3, seed=0, progress=False)
    return model.eval()


def test_a_certificate_is_a_promise_no_attack_breaks_it(smoothed_mlp, digits):
    """PGD (L2, random starts) against the smoothed classifier itself (EOT over its noise) at
    0.9 × each point's certified radius never changes its smoothed prediction; the same attack at
    a few times the radius does change it on some points (so the attack is real and this could fail)."""
    sc = SmoothedClassifier(sigma=0.25, n0=100, n=1000, alpha=0.001)
    x, y = digits["x_test"][:40], digits["y_test"][:40]
    cert = sc.certify(smoothed_mlp, x, generator=torch.Generator().manual_seed(0))
    ok = (cert.pred == y) & (cert.radius > 0.05)
    assert int(ok.sum()) >= 10
    xs, ys, rs = x[ok], y[ok], cert.radius[ok]
    smoothed = EOT(RandomNoise(smoothed_mlp, sigma=0.25, seed=3), samples=32, average="probs").eval()
    flipped_beyond = 0
    for i in range(xs.shape[0]):
        for factor in (0.9, 4.0):
            attack = PGD(eps=factor * float(rs[i]), norm="l2", steps=20, random_start=True, restarts=2)
            adv = attack(smoothed, xs[i:i + 1], ys[i:i + 1], generator=torch.Generator().manual_seed(i)).x_adv
            after = int(sc.predict(smoothed_mlp, adv, generator=torch.Generator().manual_seed(100 + i))[0])
            if factor < 1:
                assert after in (int(ys[i]), -1), (i, float(rs[i]))   # inside the radius: never another class
            else:
                flipped_beyond += int(after != int(ys[i]))
    assert flipped_beyond >= 1


def test_accuracy_curve_abstention_determinism_and_nothing_changed(smoothed_mlp, digits):
    x, y = digits["x_test"][:12], digits["y_test"][:12]
    before = snapshot(smoothed_mlp)
    rng = torch.get_rng_state()
    x0 = x.clone()
    sc = SmoothedClassifier(sigma=0.25, n0=50, n=500)
    a = sc.certify(smoothed_mlp, x, generator=torch.Generator().manual_seed(5))
    b = sc.certify(smoothed_mlp, x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.pred, b.pred) and torch.equal(a.radius, b.radius)
    assert_unchanged(smoothed_mlp, before)
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(x, x0)
    curve = a.accuracy_curve(y, [0.0, 0.25, 0.5, 1.0])
    accs = [acc for _, acc in curve]
    assert accs == sorted(accs, reverse=True) and accs[0] > 0.5
    assert a.counts.sum(1).tolist() == [500] * 12
    # with huge noise the classes mix: the smoothed classifier abstains
    blurry = SmoothedClassifier(sigma=50.0, n0=50, n=200).certify(smoothed_mlp, x,
                                                                 generator=torch.Generator().manual_seed(0))
    assert bool((blurry.pred == -1).any()) and bool((blurry.radius[blurry.pred == -1] == 0).all())


@pytest.mark.parametrize("kwargs, message", [
    ({"sigma": 0.0}, "sigma must be a finite number > 0"),
    ({"sigma": -1.0}, "sigma must be a finite number > 0"),
    ({"sigma": math.inf}, "sigma must be a finite number > 0"),
    ({"sigma": 0.25, "alpha": 1.0}, "alpha must be a confidence level strictly between 0 and 1"),
    ({"sigma": 0.25, "alpha": 0.0}, "alpha must be a confidence level"),
    ({"sigma": 0.25, "n0": 0}, "n0 must be an integer >= 1"),
    ({"sigma": 0.25, "n": 2.5}, "n must be an integer >= 1"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmoothedClassifier(**kwargs)


def test_bad_inputs_are_clear_errors(smoothed_mlp):
    sc = SmoothedClassifier(sigma=0.25, n=10)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        sc.certify(smoothed_mlp, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        sc.certify(smoothed_mlp, torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="sigma must be a number > 0"):
        GaussianNoise(sigma=0)
