"""Virtual adversarial training (Miyato et al. 2018): power iteration, the loss, semi-supervised
learning from unlabelled digits, errors and determinism (issue #5)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _helpers import snapshot
from advlab.defenses.recipe import Standard
from advlab.defenses.training import train
from advlab.defenses.vat import VAT, conditional_entropy, kl_divergence, virtual_adversarial_perturbation

pytestmark = pytest.mark.usefixtures("one_thread")


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _cnn(seed: int) -> nn.Module:
    return _seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10)), seed)


def _bn_mlp(seed: int) -> nn.Module:
    return _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                         nn.Linear(32, 10)), seed)


# --------------------------------------------------------------------------- power iteration


@pytest.fixture(scope="module")
def softmax_regression(digits):
    """A float64 linear softmax model, where the Hessian of the KL is known in closed form:
    ∇²_r KL(p(x) ‖ p(x + r)) at r = 0 is Wᵀ (diag p − p pᵀ) W (the Fisher information)."""
    model = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double(), 0)
    with torch.no_grad():
        model[1].weight.mul_(5.0)  # sharper, input-dependent predictions
    x = digits["x_test"][:50].double()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    W = model[1].weight.detach()
    H = W.T @ (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) @ W  # (B, 64, 64)
    evals, evecs = torch.linalg.eigh(H)
    return model.eval(), x, evals[:, -1], evecs[:, :, -1]


def _cos(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r = r.flatten(1)
    return (r * v).sum(1).abs() / r.norm(dim=1)


def test_power_iteration_finds_the_dominant_eigenvector(softmax_regression):
    model, x, lam, top = softmax_regression
    eps = 1e-2
    g = torch.Generator().manual_seed(0)
    # the smallest eigengap λ1/λ2 over these points is 1.28: 40 iterations shrink λ2's share ~1e4-fold
    r = virtual_adversarial_perturbation(model, x, eps=eps, power_iterations=40, generator=g)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((x.shape[0],), eps, dtype=x.dtype))
    assert _cos(r, top).min() > 0.999
    # and the KL it reaches is the second-order maximum ½ ε² λ_max
    with torch.no_grad():
        ratio = kl_divergence(model(x), model(x + r)) / (0.5 * eps**2 * lam)
    assert ratio.min() > 0.98 and ratio.max() < 1.02, ratio  # measured 0.990 .. 1.010


def test_one_power_iteration_already_points_along_the_top_direction(softmax_regression):
    """K = 1 (the paper's default): far better aligned than a random direction, which in 64
    dimensions has |cos| ≈ 0.1 with any fixed vector."""
    model, x, lam, top = softmax_regression
    g = torch.Generator().manual_seed(1)
    cos1 = torch.cat([_cos(virtual_adversarial_perturbation(model, x, eps=1e-2, generator=g), top)
                      for _ in range(4)])
    rand = torch.randn(4 * x.shape[0], 64, generator=g, dtype=x.dtype)
    cos_rand = _cos(rand, top.repeat(4, 1))
    assert cos1.median() > 0.6, cos1.median()  # measured 0.81
    assert cos1.median() > 4 * cos_rand.median(), (cos1.median(), cos_rand.median())


def test_vadv_beats_random_directions_of_the_same_norm(mlp_model, digits):
    x = digits["x_test"][:200]
    eps = 0.5
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean = mlp_model(x)
    kl_v, kl_r = [], []
    for _ in range(5):  # 5 draws of r_vadv and of a random direction per point
        r = virtual_adversarial_perturbation(mlp_model, x, eps=eps, generator=g)
        d = torch.randn(x.shape, generator=g)
        d = eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        with torch.no_grad():
            kl_v.append(kl_divergence(clean, mlp_model(x + r)))
            kl_r.append(kl_divergence(clean, mlp_model(x + d)))
    kl_v, kl_r = torch.cat(kl_v), torch.cat(kl_r)
    assert (kl_v > kl_r).float().mean() >= 0.95  # measured 0.995 (one draw)
    assert kl_v.mean() >= 10 * kl_r.mean(), (kl_v.mean(), kl_r.mean())  # measured ~50x


def test_linf_perturbation_is_a_sign_vector(mlp_model, digits):
    x = digits["x_test"][:20]
    r = virtual_adversarial_perturbation(mlp_model, x, eps=0.05, norm="linf",
                                         generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r.abs(), torch.full_like(r, 0.05))


# --------------------------------------------------------------------------- the loss


def test_batch_loss_is_ce_plus_alpha_lds(digits):
    model = _cnn(0).train()
    x, y = digits["x_train"][:32], digits["y_train"][:32]
    xu = digits["x_train"][32:96]
    for recipe, unl in ((VAT(eps=1.0, alpha=0.7), None),
                        (VAT(eps=1.0, alpha=0.7, semi_supervised=True, entropy_min=True), xu)):
        loss, logs = recipe.batch_loss(model, x, y, generator=torch.Generator().manual_seed(5),
                                       x_unlabelled=unl)
        with torch.no_grad():
            logits = model(x)
            xs = x if unl is None else torch.cat([x, unl])
            clean = model(xs)
            r = recipe.perturbation(model, xs, generator=torch.Generator().manual_seed(5), logits=clean)
            lds = kl_divergence(clean, model(xs + r)).mean()
            expected = F.cross_entropy(logits, y) + 0.7 * lds
            if unl is not None:
                expected = expected + conditional_entropy(model(unl)).mean()
        assert torch.allclose(loss.detach(), expected, rtol=1e-5), (loss, expected)
        assert math.isclose(logs["lds"], float(lds), rel_tol=1e-5)
        assert logs["lds"] > 0
        assert set(logs) >= {"loss", "ce", "lds", "acc"}


def test_batch_loss_keeps_the_model_and_global_rng(digits):
    """Only the clean labelled pass updates batch-norm statistics; no .grad, no mode change, and
    the global RNG is untouched (randomness comes from the generator)."""
    x, y, xu = digits["x_train"][:32], digits["y_train"][:32], digits["x_train"][32:96]
    model, reference = _bn_mlp(0).train(), _bn_mlp(0).train()
    rng = torch.random.get_rng_state()
    VAT(eps=1.0, semi_supervised=True, power_iterations=2).batch_loss(
        model, x, y, generator=torch.Generator().manual_seed(0), x_unlabelled=xu)
    assert torch.equal(torch.random.get_rng_state(), rng)
    with torch.no_grad():
        reference(x)  # a plain forward of the labelled batch
    after, ref = snapshot(model), snapshot(reference)
    for k in ref["state"]:
        assert torch.equal(after["state"][k], ref["state"][k]), k
    assert all(gr is None for gr in after["grads"])
    assert all(after["modes"])


def test_same_generator_same_loss_and_gradients(digits):
    x, y, xu = digits["x_train"][:32], digits["y_train"][:32], digits["x_train"][32:96]
    recipe = VAT(eps=1.0, semi_supervised=True)
    model = _cnn(0).train()
    outs = []
    for seed in (0, 0, 1):
        loss, _ = recipe.batch_loss(model, x, y, generator=torch.Generator().manual_seed(seed),
                                    x_unlabelled=xu)
        outs.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))
    assert not torch.equal(outs[0][0], outs[2][0])  # another draw of d


def test_training_is_deterministic_for_a_seed(digits):
    x, y, xu = digits["x_train"][:64], digits["y_train"][:64], digits["x_train"][64:320]
    weights = []
    for seed in (0, 0, 1):
        model = _cnn(0)
        train(model, VAT(eps=1.0, semi_supervised=True), x, y, epochs=2, batch_size=32, lr=3e-3,
              seed=seed, x_unlabelled=xu, unlabelled_batch_size=64, progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


# --------------------------------------------------------------------------- semi-supervised


def test_semi_supervised_vat_beats_training_on_the_labels_alone(digits):
    """100 labels (10 per class) + the other 1,300 training digits unlabelled, a small CNN,
    60 epochs over the labels with the same optimiser and seed: VAT vs the labels alone on the 397
    held-out digits. Measured: 0.877 -> 0.929 (seed 0; seeds 1 and 2 gave 0.892 -> 0.924 and
    0.892 -> 0.917, i.e. +2.5 to +5.2 points); asserted: at least +3 points for seed 0."""
    x, y = digits["x_train"], digits["y_train"]
    labelled = torch.cat([torch.nonzero(y == c)[:10, 0] for c in range(10)])
    rest = torch.ones(x.shape[0], dtype=torch.bool)
    rest[labelled] = False
    xl, yl, xu = x[labelled], y[labelled], x[rest]
    xt, yt = digits["x_test"], digits["y_test"]
    for seed in (0,):
        base, vat = _cnn(seed), _cnn(seed)
        common = dict(epochs=60, batch_size=32, lr=3e-3, seed=seed, progress=False)
        train(base, Standard(), xl, yl, **common)
        hist = train(vat, VAT(eps=1.0, semi_supervised=True), xl, yl, x_unlabelled=xu,
                     unlabelled_batch_size=128, x_val=xt, y_val=yt, **common)
        with torch.no_grad():
            acc_base = (base(xt).argmax(1) == yt).float().mean().item()
            acc_vat = (vat(xt).argmax(1) == yt).float().mean().item()
        assert hist.val_accuracy[-1] == pytest.approx(acc_vat)
        assert acc_vat >= acc_base + 0.03, (seed, acc_base, acc_vat)


# --------------------------------------------------------------------------- bad input


def test_semi_supervised_without_unlabelled_data_is_refused(digits):
    x, y = digits["x_train"][:32], digits["y_train"][:32]
    g = torch.Generator()
    with pytest.raises(ValueError, match="unlabelled data"):
        VAT(eps=1.0, semi_supervised=True).batch_loss(_cnn(0), x, y, generator=g)
    with pytest.raises(ValueError, match="unlabelled data"):
        train(_cnn(0), VAT(eps=1.0, semi_supervised=True), x, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="semi_supervised=True"):
        VAT(eps=1.0).batch_loss(_cnn(0), x, y, generator=g, x_unlabelled=x)
    with pytest.raises(ValueError, match="x_unlabelled"):
        VAT(eps=1.0, semi_supervised=True).batch_loss(_cnn(0), x, y, generator=g,
                                                      x_unlabelled=x.flatten(1))
    with pytest.raises(TypeError, match="Generator"):
        VAT(eps=1.0).batch_loss(_cnn(0), x, y, generator=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(eps=1.0, xi=0.0), "xi"), (dict(eps=1.0, power_iterations=0), "power_iterations"),
    (dict(eps=1.0, power_iterations=1.5), "power_iterations"), (dict(eps=1.0, alpha=-0.1), "alpha"),
    (dict(eps=1.0, norm="l1"), "norm"), (dict(eps=1.0, norm="l7"), "norm"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAT(**kwargs)


def test_card_and_norm_spelling():
    recipe = VAT(eps=2.0, norm="L2", semi_supervised=True, entropy_min=True)
    card = recipe.card()
    assert json.loads(json.dumps(card)) == card
    assert card == {"recipe": "vat", "eps": 2.0, "xi": 1e-6, "power_iterations": 1, "alpha": 1.0,
                    "entropy_min": True, "norm": "l2", "semi_supervised": True}
    with pytest.raises(TypeError, match="entropy_min"):
        VAT(eps=1.0, entropy_min=1)  # type: ignore[arg-type]


def test_bad_perturbation_arguments(mlp_model, digits):
    x, g = digits["x_test"][:4], torch.Generator()
    with pytest.raises(ValueError, match="eps"):
        virtual_adversarial_perturbation(mlp_model, x, eps=0.0, generator=g)
    with pytest.raises(ValueError, match="power_iterations"):
        virtual_adversarial_perturbation(mlp_model, x, eps=1.0, power_iterations=0, generator=g)
    with pytest.raises(TypeError, match="Generator"):
        virtual_adversarial_perturbation(mlp_model, x, eps=1.0, generator=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nn.Module"):
        virtual_adversarial_perturbation(lambda t: t, x, eps=1.0, generator=g)  # type: ignore[arg-type]
