"""Interval bound propagation (Gowal et al. 2018): soundness on sampled perturbations, exactness on
affine models, verified radii that no attack breaks, IBP training, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab._checks import AdvlabWarning
from advlab.attacks import FMN, PGD, DeepFool
from advlab.certify import interval_bounds, verified_accuracy, verified_margin, verified_radius
from advlab.defenses import IBPTraining, Standard, train
from advlab.models import Normalize, build_seeded

TOL = 1e-5  # float32 rounding of the forward pass against the bounds
RAMP = (0.005, 0.01, 0.02, 0.05, 0.1)  # IBP training's ε, stage by stage (8 epochs each)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _bn_normalize_model() -> nn.Module:
    """Normalize → conv (stride, dilation, groups, reflect padding) → BN2d → LeakyReLU → AvgPool →
    Sigmoid → flatten → dropout → linear → BN1d (negative scales) → tanh → linear, in eval mode."""
    def build() -> nn.Module:
        net = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
            nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, padding_mode="reflect"), nn.Sigmoid(),
            nn.AvgPool2d(2), nn.Identity(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(24, 16),
            nn.BatchNorm1d(16), nn.Tanh(), nn.Sequential(nn.ReLU(), nn.Linear(16, 10)))
        with torch.no_grad():
            for bn in (net[1], net[10]):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.2, 2.0)
                bn.weight.uniform_(-2.0, 2.0)  # some negative: the sign-aware scale matters
                bn.bias.uniform_(-0.5, 0.5)
        return Normalize(net, mean=0.3, std=0.4)
    return _seeded(build, 3).eval()


def _models() -> dict[str, nn.Module]:
    zoo = {n: build_seeded(n, in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
           for n in ("mlp", "small-cnn", "lenet5")}
    pools = _seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(4), nn.Dropout2d(0.3),
        nn.Conv2d(3, 4, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10)), 4).eval()
    return {**zoo, "bn-normalize": _bn_normalize_model(), "adaptive-pools": pools}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return _models()


@pytest.fixture(scope="module")
def trained(digits) -> dict[str, nn.Module]:
    """A standard and an IBP-trained zoo MLP on the digits (ε ramped 0.005 → 0.1, κ = 0.5)."""
    x, y = digits["x_train"], digits["y_train"]
    std = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    train(std, Standard(), x, y, epochs=20, batch_size=64, lr=1e-3, seed=0, progress=False)
    ibp = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    for eps in RAMP:
        train(ibp, IBPTraining(eps=eps, kappa=0.5), x, y, epochs=8, batch_size=64, lr=1e-3, seed=0,
              progress=False)
    return {"standard": std.eval(), "ibp": ibp.eval()}


# ----------------------------------------------------------------------------- soundness


@pytest.mark.parametrize("name", ["mlp", "small-cnn", "lenet5", "bn-normalize", "adaptive-pools"])
def test_bounds_contain_sampled_perturbations(models, digits, name):
    model = models[name]
    x = digits["x_test"][:6]
    g = torch.Generator().manual_seed(0)
    for eps in (0.02, 0.1):
        lo, hi = _box(x, eps)
        z_lo, z_hi = interval_bounds(model, lo, hi)
        assert z_lo.shape == z_hi.shape == (6, 10) and bool(torch.isfinite(z_lo).all())
        # 300 uniform points and 100 corners of each point's box
        u = torch.rand(300, *x.shape, generator=g)
        corners = torch.randint(0, 2, (100, *x.shape), generator=g).float()
        samples = torch.cat([lo + u * (hi - lo), lo + corners * (hi - lo)])  # (400, 6, 1, 8, 8)
        with torch.no_grad():
            out = model(samples.flatten(0, 1)).view(400, 6, 10)
        assert bool((out >= z_lo - TOL).all()) and bool((out <= z_hi + TOL).all())
        # and the bounds are not vacuous: the samples reach into them
        assert float((out.amax(0) - out.amin(0)).mean()) > 0
        # the (elided) margin bound is below every sample's margin z_y - max_{j≠y} z_j
        y = out[0].argmax(1)  # the class at one sample, so some margins are positive
        true = out.gather(2, y[None, :, None].expand(400, 6, 1))[..., 0] - out.scatter(
            2, y[None, :, None].expand(400, 6, 1), -math.inf).amax(2)  # (400, 6)
        margin = verified_margin(model, x, y, eps)
        naive = verified_margin(model, x, y, eps, elide=False)
        assert bool((margin <= true.amin(0) + TOL).all()) and bool((naive <= margin + TOL).all())


def test_affine_model_bounds_are_exact(linear_model, digits):
    """Softmax regression behind a Normalize wrapper (elementwise affine, then Linear): IBP's bounds
    are the true min/max over the box, attained at the corner x*_i = lo_i if w_ki > 0 else hi_i."""
    model = Normalize(linear_model, mean=0.25, std=0.5).eval()
    w = linear_model[1].weight.detach()  # (10, 64)
    x = digits["x_test"][:5]
    lo, hi = _box(x, 0.07)
    z_lo, z_hi = interval_bounds(model, lo, hi)
    lo_f, hi_f = lo.flatten(1), hi.flatten(1)  # (5, 64)
    for k in range(10):
        pos = w[k] > 0
        argmin = torch.where(pos, lo_f, hi_f).view_as(x)
        argmax = torch.where(pos, hi_f, lo_f).view_as(x)
        with torch.no_grad():
            assert torch.allclose(model(argmin)[:, k], z_lo[:, k], atol=1e-5)
            assert torch.allclose(model(argmax)[:, k], z_hi[:, k], atol=1e-5)


def test_conv_bounds_are_exact_and_match_the_corner(digits):
    """One Conv2d (stride 2, padding 1, groups 1): each output's extreme over the box is at a corner."""
    conv = _seeded(lambda: nn.Conv2d(1, 3, 3, stride=2, padding=1), 0).eval()
    x = digits["x_test"][:2]
    lo, hi = _box(x, 0.1)
    z_lo, z_hi = interval_bounds(conv, lo, hi)
    # output (c, i, j) depends on the 3x3 patch at (2i - 1, 2j - 1): min at lo where w > 0
    c, i, j = 1, 2, 1
    w = conv.weight[c, 0]
    worst = hi.clone()
    patch_lo, patch_hi = lo[:, 0, 2 * i - 1:2 * i + 2, 2 * j - 1:2 * j + 2], hi[:, 0, 2 * i - 1:2 * i + 2, 2 * j - 1:2 * j + 2]
    worst[:, 0, 2 * i - 1:2 * i + 2, 2 * j - 1:2 * j + 2] = torch.where(w > 0, patch_lo, patch_hi)
    with torch.no_grad():
        assert torch.allclose(conv(worst)[:, c, i, j], z_lo[:, c, i, j], atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "small-cnn", "lenet5", "bn-normalize", "adaptive-pools"])
def test_zero_eps_is_the_output_and_bounds_widen_with_eps(models, digits, name):
    model = models[name]
    x = digits["x_test"][:8]
    with torch.no_grad():
        out = model(x)
    z_lo, z_hi = interval_bounds(model, x, x)
    assert torch.allclose(z_lo, out, atol=1e-5) and torch.allclose(z_hi, out, atol=1e-5)
    prev_lo, prev_hi = z_lo, z_hi
    for eps in (0.005, 0.01, 0.03, 0.1, 0.3):
        z_lo, z_hi = interval_bounds(model, *_box(x, eps))
        assert bool((z_lo <= prev_lo + 1e-6).all()) and bool((z_hi >= prev_hi - 1e-6).all())
        prev_lo, prev_hi = z_lo, z_hi
    assert float((prev_hi - prev_lo).detach().min()) > 0  # at ε = 0.3 every logit's interval is open


def test_batchnorm_uses_running_statistics_whatever_the_mode(digits):
    model = _bn_normalize_model()
    x = digits["x_test"][:4]
    with torch.no_grad():
        out = model(x)  # eval mode
    model.train()
    z_lo, z_hi = interval_bounds(model, x, x)
    assert torch.allclose(z_lo, out, atol=1e-5) and torch.allclose(z_hi, out, atol=1e-5)
    assert all(m.training for m in model.modules())  # not switched


class _Chain(nn.Module):
    """A custom module whose forward is a plain chain of its children (one of them twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.flat, self.fc1, self.act, self.fc2 = nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.act(self.fc1(self.flat(x)))))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(x))


def test_a_custom_plain_chain_is_walked(digits):
    model = _seeded(_Chain, 0).eval()
    x = digits["x_test"][:4]
    lo, hi = _box(x, 0.05)
    z_lo, z_hi = interval_bounds(model, lo, hi)
    same = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), 0)
    ref_lo, ref_hi = interval_bounds(same, lo, hi)
    assert torch.equal(z_lo, ref_lo) and torch.equal(z_hi, ref_hi)


# ----------------------------------------------------------------------------- verified radius


def test_verified_radius_is_a_promise_against_pgd_and_minimal_attacks(trained, digits):
    model = trained["ibp"]
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    before = snapshot(model)
    radius = verified_radius(model, x, y)
    assert_unchanged(model, before)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert bool((radius[~correct] == 0).all())
    assert float((radius >= 0.05).float().mean()) > 0.6  # not vacuous
    # PGD L∞, 100 steps, 5 random starts: nothing verified at ε is broken at ε
    for eps in (0.02, 0.05, 0.1):
        safe = radius >= eps
        assert int(safe.sum()) >= 20
        res = PGD(eps=eps, steps=100, restarts=5)(model, x[safe], y[safe], generator=torch.Generator().manual_seed(1))
        assert not bool(res.success.any()), eps
    # minimal-norm attacks: every adversarial point they find lies beyond the verified radius
    for attack in (DeepFool(norm="linf", steps=100), FMN(norm="linf", steps=200)):
        res = attack(model, x[correct], y[correct])
        found = res.success
        assert float(found.float().mean()) > 0.9, attack
        assert bool((res.norms[found] >= radius[correct][found]).all()), attack
        # and the radius is a real fraction of the attacks' distances (IBP is not vacuous)
        assert float((radius[correct][found] / res.norms[found]).median()) > 0.3


def test_radius_agrees_with_the_margin_and_elision_is_tighter(trained, digits):
    model = trained["ibp"]
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    tol = 1e-3
    radius = verified_radius(model, x, y, tol=tol)
    for eps in (0.02, 0.05, 0.1):
        margin = verified_margin(model, x, y, eps)
        naive = verified_margin(model, x, y, eps, elide=False)
        assert bool((margin >= naive - 1e-5).all())
        assert float((margin > 0).float().mean()) > float((naive > 0).float().mean())  # strictly helps
        assert bool((margin[radius >= eps] > 0).all())  # verified at the radius → at every smaller ε
        assert bool((radius[margin > 0] >= eps - tol).all())  # bisection within tol
        assert verified_accuracy(model, x, y, eps) == pytest.approx(float((margin > 0).float().mean()))
    # ε = 0: verified accuracy is the clean accuracy; radius capped at eps_max
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    assert verified_accuracy(model, x, y, 0.0) == pytest.approx(clean)
    capped = verified_radius(model, x, y, eps_max=0.01)
    assert float(capped.max()) == pytest.approx(0.01) and bool((capped <= 0.01).all())


def test_ibp_training_verifies_more_than_standard(trained, digits):
    x, y = digits["x_test"], digits["y_test"]
    rows = {}
    for name, model in trained.items():
        with torch.no_grad():
            clean = float((model(x).argmax(1) == y).float().mean())
        rows[name] = {"clean": clean}
        for eps in (0.02, 0.05, 0.1):
            res = PGD(eps=eps, steps=50, restarts=3)(model, x, y, generator=torch.Generator().manual_seed(0))
            rows[name][eps] = (verified_accuracy(model, x, y, eps), 1 - res.success_rate)
    print(rows)  # measured (pytest -s): see the commit message
    for name in rows:
        for eps in (0.02, 0.05, 0.1):
            verified, pgd = rows[name][eps]
            assert verified <= pgd + 1e-9  # a verified point is robust: a lower bound on PGD's count
    assert rows["standard"]["clean"] > 0.95 and rows["ibp"]["clean"] > 0.93
    assert rows["ibp"][0.05][0] > 0.75 and rows["standard"][0.05][0] < 0.05
    assert rows["ibp"][0.05][0] > rows["standard"][0.05][0] + 0.6


def test_verified_radius_changes_nothing(digits, models):
    model = models["bn-normalize"].train()
    x, y = digits["x_test"][:16], digits["y_test"][:16]
    x_before, y_before = x.clone(), y.clone()
    before = snapshot(model)
    rng = torch.get_rng_state()
    with pytest.warns(AdvlabWarning, match="training mode"):
        r = verified_radius(model, x, y)
    assert r.shape == (16,) and not r.requires_grad
    assert_unchanged(model, before)
    assert torch.equal(x, x_before) and torch.equal(y, y_before) and torch.equal(torch.get_rng_state(), rng)
    model.eval()


# ----------------------------------------------------------------------------- the recipe


def test_ibp_recipe_loss_is_eq8(digits):
    """κ·CE(f(x)) + (1 − κ)·CE(ẑ) with ẑ_j = hi(z_j), ẑ_y = lo(z_y) (elide=False: Eq. 8 verbatim);
    κ = 1 is the standard loss; the elided loss is no larger (a tighter bound)."""
    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x, y = digits["x_train"][:32], digits["y_train"][:32]
    g = torch.Generator().manual_seed(0)
    loss, logs = IBPTraining(eps=0.05, kappa=0.3, elide=False).batch_loss(model, x, y, generator=g)
    z_lo, z_hi = interval_bounds(model, *_box(x, 0.05))
    z_worst = z_hi.scatter(1, y[:, None], z_lo.gather(1, y[:, None]))
    expected = 0.3 * F.cross_entropy(model(x), y) + 0.7 * F.cross_entropy(z_worst, y)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert logs["robust_loss"] == pytest.approx(float(F.cross_entropy(z_worst, y).detach()), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    model.zero_grad()
    std, _ = Standard().batch_loss(model, x, y, generator=g)
    one, _ = IBPTraining(eps=0.05, kappa=1.0).batch_loss(model, x, y, generator=g)
    assert float(one.detach()) == pytest.approx(float(std.detach()))
    elided = IBPTraining(eps=0.05, kappa=0.0).batch_loss(model, x, y, generator=g)[1]["robust_loss"]
    assert elided <= logs["robust_loss"] + 1e-6
    assert IBPTraining(eps=0.05).card() == {"recipe": "ibp", "eps": 0.05, "kappa": 0.5, "elide": True,
                                           "bounds": [0.0, 1.0], "ramp": 0.0}


def test_the_ibp_ramp_trains_at_eps_times_progress(digits):
    """With ramp = r the loss at progress p is IBPTraining(eps·p/r, κ = 1 − (1 − kappa)·p/r)'s, the
    standard loss at p = 0 and the full one from p = r on (reproducer: without a ramp, IBP from
    scratch collapsed an MLP on digits to ln 10 in a spec of 20 epochs at ε = 0.02)."""
    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x, y = digits["x_train"][:32], digits["y_train"][:32]
    g = torch.Generator().manual_seed(0)
    ramped = IBPTraining(eps=0.04, kappa=0.5, ramp=0.5)
    std, _ = Standard().batch_loss(model, x, y, generator=g)
    at0, _ = ramped.batch_loss(model, x, y, generator=g, progress=0.0)
    assert float(at0.detach()) == pytest.approx(float(std.detach()))
    half, _ = ramped.batch_loss(model, x, y, generator=g, progress=0.25)
    same, _ = IBPTraining(eps=0.02, kappa=0.75).batch_loss(model, x, y, generator=g)
    assert float(half.detach()) == pytest.approx(float(same.detach()), rel=1e-6)
    full, _ = ramped.batch_loss(model, x, y, generator=g, progress=0.9)
    plain, _ = IBPTraining(eps=0.04, kappa=0.5).batch_loss(model, x, y, generator=g)
    assert float(full.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)
    # the trainer tells it how far it is: a ramped run from scratch trains where a fixed one fails
    xt, yt = digits["x_train"], digits["y_train"]
    accs = {}
    for r in (0.0, 0.5):
        m = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
        train(m, IBPTraining(eps=0.02, ramp=r), xt, yt, epochs=20, batch_size=128, lr=3e-3, seed=0,
              progress=False)
        m.eval()
        with torch.no_grad():
            accs[r] = float((m(digits["x_test"]).argmax(1) == digits["y_test"]).float().mean())
        assert verified_accuracy(m, digits["x_test"], digits["y_test"], 0.02) <= accs[r]
    assert accs[0.5] >= 0.9 and accs[0.5] > accs[0.0] + 0.3, accs


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "eps"), ({"eps": -0.1}, "eps"), ({"eps": 0.1, "kappa": 1.5}, "kappa"),
    ({"eps": 0.1, "kappa": -0.1}, "kappa"), ({"eps": 0.1, "elide": 1}, "elide"),
    ({"eps": 0.1, "bounds": (1.0, 0.0)}, "bounds"),
])
def test_ibp_recipe_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IBPTraining(**kwargs)


def test_ibp_recipe_names_an_unsupported_layer(digits):
    model = nn.Sequential(nn.Flatten(), _Residual(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"layer '1' \(_Residual\)"):
        train(model, IBPTraining(eps=0.1), digits["x_train"][:64], digits["y_train"][:64], epochs=1,
              progress=False)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Flatten(), _Residual(), nn.Linear(64, 10)), r"layer '1' \(_Residual\).*not a plain chain"),
    (nn.Sequential(nn.Flatten(), nn.Sequential(nn.Identity(), _FunctionalRelu())),
     r"layer '1\.1' \(_FunctionalRelu\).*not a plain chain"),
    (nn.Sequential(nn.Flatten(), nn.LSTM(64, 10)), r"layer '1' \(LSTM\)"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1)), r"layer '2' \(Softmax\)"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.LeakyReLU(-0.5)), r"layer '2' \(LeakyReLU\).*monotone"),
    (nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64, track_running_stats=False), nn.Linear(64, 10)),
     r"layer '1' \(BatchNorm1d\).*running statistics"),
])
def test_unsupported_layers_are_named(digits, model, match):
    x = digits["x_test"][:2]
    with pytest.raises(ValueError, match=match) as info:
        interval_bounds(model.eval(), x, x)
    assert "supported layers: Linear, Conv1d, Conv2d" in str(info.value)


def test_residual_network_is_refused(digits):
    model = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = digits["x_test"][:2]
    with pytest.raises(ValueError, match=r"the model \(SmallResNet\).*residual"):
        verified_radius(model, x, digits["y_test"][:2])


def test_bad_boxes(models, digits):
    model = models["mlp"]
    x = digits["x_test"][:3]
    with pytest.raises(ValueError, match=r"lo > hi in 1 of 192 coordinates"):
        bad = x.clone()
        bad[0, 0, 0, 0] += 0.5
        interval_bounds(model, bad, x)
    with pytest.raises(ValueError, match=r"lo has shape \(3, 1, 8, 8\) but hi has shape \(2, 1, 8, 8\)"):
        interval_bounds(model, x, x[:2])
    with pytest.raises(ValueError, match=r"layer 'net.1' \(Linear\) cannot take a box of shape \(3, 16\).*input box has shape \(3, 1, 4, 4\)"):
        interval_bounds(model, x[..., :4, :4], x[..., :4, :4])
    with pytest.raises(ValueError, match="finite"):
        interval_bounds(model, x, x + math.inf)
    with pytest.raises(TypeError, match="hi must be a torch.Tensor"):
        interval_bounds(model, x, x.numpy())
    with pytest.raises(TypeError, match="float64 but the model's parameters are torch.float32"):
        interval_bounds(model, x.double(), x.double())
    with pytest.raises(ValueError, match="non-empty batch"):
        interval_bounds(model, x[0, 0, 0], x[0, 0, 0])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        interval_bounds(lambda t: t, x, x)  # type: ignore[arg-type]


def test_bad_arguments_to_the_verifier(models, digits):
    model = models["mlp"]
    x, y = digits["x_test"][:3], digits["y_test"][:3]
    with pytest.raises(ValueError, match="eps_max"):
        verified_radius(model, x, y, eps_max=0.0)
    with pytest.raises(ValueError, match="tol"):
        verified_radius(model, x, y, tol=-1e-3)
    with pytest.raises(ValueError, match="eps"):
        verified_accuracy(model, x, y, -0.1)
    with pytest.raises(ValueError, match=r"y has shape \(2,\)"):
        verified_radius(model, x, y[:2])
    with pytest.raises(ValueError, match="outside the bounds"):
        verified_radius(model, x + 2, y)
    with pytest.raises(ValueError, match="class 12"):
        verified_margin(model, x, torch.tensor([0, 1, 12]), 0.1)


@pytest.mark.parametrize("arch, shape", [("tabular-mlp", (30,)), ("cnn1d", (3, 24))])
def test_tables_and_signals_are_bounded_soundly(arch, shape):
    """Issue #14 item 3: a table (B, D) and a signal (B, C, T) model, behind a per-feature /
    per-channel Normalize (it took images only, and Conv1d/MaxPool1d had no interval rule): the
    bounds contain sampled perturbations and PGD breaks no verified point."""
    g = torch.Generator().manual_seed(1)
    net = build_seeded(arch, in_shape=shape, num_classes=3, seed=0)
    model = Normalize(net, mean=torch.rand(shape[0], generator=g), std=0.5 + torch.rand(shape[0], generator=g)).eval()
    x = torch.rand(12, *shape, generator=g)
    y = model(x).argmax(1)
    eps = 0.01
    lo, hi = _box(x, eps)
    z_lo, z_hi = interval_bounds(model, lo, hi)
    u = torch.rand(200, *x.shape, generator=g)
    corners = torch.randint(0, 2, (50, *x.shape), generator=g).float()
    samples = torch.cat([lo + u * (hi - lo), lo + corners * (hi - lo)])
    with torch.no_grad():
        out = model(samples.flatten(0, 1)).view(250, 12, 3)
    assert bool((out >= z_lo - TOL).all()) and bool((out <= z_hi + TOL).all())
    assert float((out.amax(0) - out.amin(0)).mean()) > 0
    radius = verified_radius(model, x, y)
    ok = radius > 0
    assert bool(ok.any())
    r = PGD(eps=float(radius[ok].min()), steps=20, random_start=True)(model, x[ok], y[ok])
    assert not bool(r.success.any())
