"""Detectors (SafetyNet, Metzen et al.'s activation detector), the reject wrapper and the adaptive
attack, on the digits CNN of conftest.

Fit set: the first 600 training images and their PGD (L∞, ε = 0.2, 10 steps) examples. Held-out:
the first 200 test images and theirs. Detectors read layer ``"3"`` (the ReLU after the second
convolution, 16·8·8 units): the default last ReLU (32 units of the fc layer) separates PGD examples
only weakly on this tiny model (held-out ROC-AUC ≈ 0.65-0.8 when measured).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks.gradient import FGSM, PGD
from advlab.defenses.detectors import ActivationDetector, FittedDetector, SafetyNet, detection_roc_auc, find_layer
from advlab.defenses.guarded import AdaptivePGD, GuardedClassifier, guarded_success, reject_aware_margin

EPS = 0.2
LAYER = "3"


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def sets(digits, cnn_model):
    pgd = PGD(eps=EPS, steps=10)
    g = torch.Generator().manual_seed(0)
    x_fit, y_fit = digits["x_train"][:600], digits["y_train"][:600]
    x_ho, y_ho = digits["x_test"][:200], digits["y_test"][:200]
    return {"x_fit": x_fit, "adv_fit": pgd(cnn_model, x_fit, y_fit, generator=g).x_adv,
            "x_ho": x_ho, "y_ho": y_ho, "adv_ho": pgd(cnn_model, x_ho, y_ho, generator=g).x_adv}


@pytest.fixture(scope="module")
def detectors(cnn_model, sets):
    return {
        "safetynet": SafetyNet(layer=LAYER).fit(cnn_model, sets["x_fit"], sets["adv_fit"]),
        "activation": ActivationDetector(layer=LAYER, epochs=15, seed=0).fit(
            cnn_model, sets["x_fit"], sets["adv_fit"]),
    }


# -- detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetynet", "activation"])
def test_detector_separates_held_out_pgd_and_fgsm(kind, detectors, sets, cnn_model):
    det = detectors[kind]
    auc_pgd = detection_roc_auc(det, sets["x_ho"], sets["adv_ho"])
    adv_fgsm = FGSM(eps=EPS)(cnn_model, sets["x_ho"], sets["y_ho"]).x_adv
    auc_fgsm = detection_roc_auc(det, sets["x_ho"], adv_fgsm)
    # measured: 1.000 for both detectors and both attacks; chance is 0.5
    assert auc_pgd > 0.95, auc_pgd
    assert auc_fgsm > 0.95, auc_fgsm
    # the default threshold rejects few clean and most PGD held-out points
    assert det.predict(sets["x_ho"]).float().mean() < 0.1
    assert det.predict(sets["adv_ho"]).float().mean() > 0.9


def test_roc_auc_equals_pairwise_definition(detectors, sets):
    det = detectors["activation"]
    s0, s1 = det.score(sets["x_ho"][:50]), det.score(sets["adv_ho"][50:120])
    pairs = (s1[None, :] > s0[:, None]).double() + 0.5 * (s1[None, :] == s0[:, None]).double()
    assert detection_roc_auc(det, sets["x_ho"][:50], sets["adv_ho"][50:120]) == pytest.approx(
        float(pairs.mean()), abs=1e-12)


def test_safetynet_torch_score_matches_sklearn_svm(detectors, sets, cnn_model):
    det = detectors["safetynet"]
    module = dict(cnn_model.named_modules())[LAYER]
    acts = []
    h = module.register_forward_hook(lambda _m, _i, o: acts.append(o.flatten(1)))
    try:
        with torch.no_grad():
            cnn_model(sets["adv_ho"][:64])
    finally:
        h.remove()
    codes = det.head.code(acts[0])
    assert set(codes.unique().tolist()) <= {0.0, 1.0}  # binary code: unit on / off
    assert torch.equal(codes, (acts[0] > 0).float())
    ref = torch.as_tensor(det.estimator.decision_function(codes.double().numpy()), dtype=torch.float32)
    assert torch.allclose(det.score(sets["adv_ho"][:64]), ref, atol=1e-4)


def test_safetynet_bpda_gradient_is_svm_gradient_over_sigma(detectors, sets, cnn_model):
    """Forward: the exact SVM value on the quantised code; backward: d code / d a = 1 / σ."""
    det = detectors["safetynet"]
    module = dict(cnn_model.named_modules())[LAYER]
    acts = []
    h = module.register_forward_hook(lambda _m, _i, o: acts.append(o.flatten(1)))
    try:
        with torch.no_grad():
            cnn_model(sets["adv_ho"][:16])
    finally:
        h.remove()
    a = acts[0].clone().requires_grad_(True)
    s = det.head(a)
    g, = torch.autograd.grad(s.sum(), a)
    svm = det.estimator
    code = det.head.code(a.detach()).double().requires_grad_(True)
    sv = torch.as_tensor(svm.support_vectors_)
    ref = torch.exp(-svm.gamma * torch.cdist(code, sv) ** 2) @ torch.as_tensor(svm.dual_coef_[0]) \
        + svm.intercept_[0]
    g_code, = torch.autograd.grad(ref.sum(), code)
    assert torch.allclose(s.double(), ref.detach(), atol=1e-4)
    assert torch.allclose(g.double(), g_code / det.head.scale.double(), rtol=1e-3, atol=1e-5)
    assert float(g.abs().sum()) > 0


def test_safetynet_levels_quantise_at_per_unit_thresholds(cnn_model, sets):
    det = SafetyNet(layer=LAYER, levels=4).fit(cnn_model, sets["x_fit"][:200], sets["adv_fit"][:200])
    assert det.head.thresholds.shape == (3, 16 * 8 * 8)
    assert torch.equal(det.head.thresholds[0], torch.zeros(16 * 8 * 8))
    t = det.head.thresholds
    assert bool((t[1:] >= t[:-1]).all())  # increasing per unit
    a = torch.tensor([[0.0] * 1024, [1e9] * 1024])
    assert torch.equal(det.head.code(a)[0], torch.zeros(1024))
    on = torch.isfinite(t[-1])  # units active on some clean input reach the top level
    assert torch.equal(det.head.code(a)[1][on], torch.ones(int(on.sum())))


def test_default_layer_is_last_relu_and_hooks_are_removed(cnn_model, linear_model, digits):
    name, module = find_layer(cnn_model, None, digits["x_test"][:2])
    assert name == "7" and module is cnn_model[7]
    assert find_layer(cnn_model, cnn_model[3], digits["x_test"][:2]) == ("3", cnn_model[3])
    assert _no_hooks(cnn_model)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        find_layer(linear_model, None, digits["x_test"][:2])
    with pytest.raises(ValueError, match="no submodule named 'fc9'"):
        find_layer(cnn_model, "fc9", digits["x_test"][:2])
    with pytest.raises(ValueError, match="not a submodule"):
        find_layer(cnn_model, nn.ReLU(), digits["x_test"][:2])


# -- the guarded model ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetynet", "activation"])
def test_guarded_predictions_equal_classifier_where_not_rejected(kind, detectors, sets, cnn_model):
    det = detectors[kind]
    guarded = GuardedClassifier(cnn_model, det)
    x = torch.cat([sets["x_ho"][:100], sets["adv_ho"][:100]])
    pred, rejected = guarded.predict(x)
    with torch.no_grad():
        base = cnn_model(x).argmax(1)
        out = guarded(x)
    assert 20 < int(rejected.sum()) < 180  # both outcomes occur in this mix
    assert torch.equal(rejected, det.predict(x))
    assert torch.equal(pred[~rejected], base[~rejected])
    assert out.shape == (200, 11)
    assert torch.equal(out.argmax(1), torch.where(rejected, torch.full_like(pred, 10), base))
    # a threshold above every score rejects nothing
    high = float(det.score(x).max()) + 1
    p2, r2 = GuardedClassifier(cnn_model, det, threshold=high).predict(x)
    assert not bool(r2.any()) and torch.equal(p2, base)


@pytest.mark.parametrize("kind", ["safetynet", "activation"])
def test_adaptive_attack_collapses_the_detector(kind, detectors, sets, cnn_model):
    guarded = GuardedClassifier(cnn_model, detectors[kind])
    x, y = sets["x_ho"], sets["y_ho"]
    plain = guarded_success(guarded, sets["adv_ho"], y).float().mean()
    res = AdaptivePGD(eps=EPS, steps=40)(guarded, x, y, generator=torch.Generator().manual_seed(1))
    assert bool(res.threat.contains(res.x_adv, x).all())
    assert torch.equal(res.success, guarded_success(guarded, res.x_adv, y))
    assert torch.equal(res.success, (res.pred != y) & (res.pred != 10))
    adaptive = res.success.float().mean()
    # measured: plain PGD fools the guarded model on 0-0.5% of points, the adaptive attack on
    # 76-84% (SafetyNet through BPDA, the activation detector directly)
    assert plain < 0.05, plain
    assert adaptive > 0.6, adaptive
    assert adaptive > plain + 0.5


def test_reject_aware_margin_is_positive_exactly_when_fooled_and_accepted():
    z = torch.tensor([[5.0, 1.0, 0.0, 4.0],    # true 0 wins: 1 - max(5, 4) < 0
                      [1.0, 5.0, 0.0, 4.0],    # class 1 beats true and reject -> positive
                      [1.0, 5.0, 0.0, 6.0]])   # reject wins -> negative
    m = reject_aware_margin(3)(z, torch.zeros(3, dtype=torch.long), None)
    assert torch.equal(m, torch.tensor([-4.0, 1.0, -1.0]))


# -- purity ---------------------------------------------------------------------------------------


def test_nothing_is_mutated(cnn_model, sets):
    before = snapshot(cnn_model)
    x_fit, adv_fit = sets["x_fit"][:150].clone(), sets["adv_fit"][:150].clone()
    xc, ac = x_fit.clone(), adv_fit.clone()
    rng = torch.random.get_rng_state()
    for cfg in (SafetyNet(layer=LAYER), ActivationDetector(layer=LAYER, epochs=2)):
        det = cfg.fit(cnn_model, x_fit, adv_fit)
        det.score(x_fit)
        guarded = GuardedClassifier(cnn_model, det)
        guarded.predict(x_fit[:20])
        AdaptivePGD(eps=EPS, steps=2)(guarded, sets["x_ho"][:20], sets["y_ho"][:20])
    assert torch.equal(x_fit, xc) and torch.equal(adv_fit, ac)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert_unchanged(cnn_model, before)
    assert _no_hooks(cnn_model)


def test_activation_detector_is_deterministic_given_seed(cnn_model, sets):
    x, a = sets["x_fit"][:150], sets["adv_fit"][:150]
    s1 = ActivationDetector(layer=LAYER, epochs=2, seed=3).fit(cnn_model, x, a).score(x)
    s2 = ActivationDetector(layer=LAYER, epochs=2, seed=3).fit(cnn_model, x, a).score(x)
    s3 = ActivationDetector(layer=LAYER, epochs=2, seed=4).fit(cnn_model, x, a).score(x)
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [SafetyNet(layer=LAYER), ActivationDetector(layer=LAYER, epochs=1)])
def test_one_class_fit_is_rejected(cfg, cnn_model, sets):
    x = sets["x_fit"][:50]
    with pytest.raises(ValueError, match="x_adv is empty.*one class only"):
        cfg.fit(cnn_model, x, x[:0])
    with pytest.raises(ValueError, match="x_clean is empty.*one class only"):
        cfg.fit(cnn_model, x[:0], x)
    with pytest.raises(ValueError, match="x_adv equals x_clean"):
        cfg.fit(cnn_model, x, x.clone())
    assert _no_hooks(cnn_model)


def test_bad_shapes_and_arguments(cnn_model, detectors, sets, mlp_model):
    x = sets["x_fit"][:50]
    with pytest.raises(ValueError, match="per-example shape"):
        SafetyNet(layer=LAYER).fit(cnn_model, x, torch.rand(50, 1, 9, 9))
    with pytest.raises(ValueError, match="fitted on inputs of shape"):
        detectors["safetynet"].score(torch.rand(4, 1, 9, 9))
    with pytest.raises(ValueError, match="batch dimension"):
        detectors["activation"].score(torch.rand(8))
    with pytest.raises(TypeError, match="floating-point"):
        detectors["activation"].score(torch.zeros(4, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="model failed on inputs of shape"):
        SafetyNet(layer=LAYER).fit(cnn_model, torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8))
    assert _no_hooks(cnn_model)  # hooks removed on the error path too
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        SafetyNet(levels=1)
    with pytest.raises(ValueError, match="epochs"):
        ActivationDetector(epochs=0)
    with pytest.raises(TypeError, match="layer must be"):
        SafetyNet(layer=3)
    with pytest.raises(ValueError, match="different model"):
        GuardedClassifier(mlp_model, detectors["safetynet"])
    with pytest.raises(TypeError, match="FittedDetector"):
        GuardedClassifier(cnn_model, SafetyNet())
    with pytest.raises(ValueError, match="threshold"):
        GuardedClassifier(cnn_model, detectors["safetynet"], threshold=float("nan"))
    with pytest.raises(TypeError, match="GuardedClassifier"):
        AdaptivePGD(eps=0.1)(cnn_model, x, sets["y_ho"][:50])
    with pytest.raises(ValueError, match="eps"):
        AdaptivePGD(eps=-1.0)
    assert isinstance(detectors["safetynet"], FittedDetector)
