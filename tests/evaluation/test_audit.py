"""The gradient-masking audit flags masked models and passes honest ones (issue #3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import PGD
from advlab.evaluation.audit import audit


def _mlp(seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _fit(model, x, targets, *, epochs, temperature=1.0, soft=False, seed=0, adversary=None, lr=3e-3):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            xb = x[b]
            if adversary is not None:
                model.eval()
                xb = adversary(model, xb, targets[b], generator=g).x_adv
            model.train()
            opt.zero_grad()
            logits = model(xb) / temperature
            if soft:
                loss = -(targets[b] * torch.log_softmax(logits, 1)).sum(1).mean()
            else:
                loss = nn.functional.cross_entropy(logits, targets[b])
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def distilled(digits):
    """Defensive distillation (Papernot et al. 2016) at T = 100, deployed at T = 1."""
    x, y = digits["x_train"], digits["y_train"]
    teacher = _fit(_mlp(10), x, y, epochs=30, temperature=100.0, lr=2e-2)
    with torch.no_grad():
        soft = torch.softmax(teacher(x) / 100.0, 1)
    return _fit(_mlp(11), x, soft, epochs=30, temperature=100.0, soft=True, lr=2e-2)


class Quantize(nn.Module):
    """Input quantisation to a few grey levels: a non-differentiable preprocessing layer."""

    def forward(self, x):
        return torch.round(x * 4) / 4


@pytest.fixture(scope="module")
def quantized(cnn_model):
    return nn.Sequential(Quantize(), cnn_model).eval()


@pytest.fixture(scope="module")
def pgd_trained(digits):
    """Madry et al. (2018) adversarial training, PGD-5 at ε = 0.1, on digits."""
    x, y = digits["x_train"], digits["y_train"]
    return _fit(_mlp(12), x, y, epochs=8, adversary=PGD(eps=0.1, steps=5))


def _points(digits):
    return digits["x_test"][:200], digits["y_test"][:200]


def test_standard_model_passes(cnn_model, digits):
    x, y = _points(digits)
    before = snapshot(cnn_model)
    report = audit(cnn_model, x, y, norm="linf", eps=0.1, steps=5)
    assert report.passed, report.table()
    assert_unchanged(cnn_model, before)


def test_pgd_trained_model_passes(pgd_trained, digits):
    x, y = _points(digits)
    report = audit(pgd_trained, x, y, norm="linf", eps=0.1, steps=5)
    assert report.passed, report.table()
    # and it is actually more robust than a standard model
    assert report.check("iterative_beats_single_step").values["iterative"] < 0.9


def test_distilled_model_is_flagged(distilled, digits):
    x, y = _points(digits)
    report = audit(distilled, x, y, norm="linf", eps=0.1, steps=5)
    assert not report.passed
    failed = {c.name for c in report.failed_checks}
    assert "gradients" in failed, report.table()
    assert "unbounded_succeeds" in failed or "white_box_beats_transfer" in failed
    assert "C&W" in report.check("gradients").advice


def test_quantized_model_is_flagged(quantized, digits):
    x, y = _points(digits)
    report = audit(quantized, x, y, norm="linf", eps=0.1, steps=5)
    assert not report.passed
    failed = {c.name for c in report.failed_checks}
    assert {"gradients", "unbounded_succeeds"} <= failed, report.table()
    assert "BPDA" in report.check("gradients").advice


def test_randomised_and_probability_models_are_reported(cnn_model, digits):
    x, y = _points(digits)

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = torch.Generator().manual_seed(0)

        def forward(self, x):
            return cnn_model(x + 0.01 * torch.randn(x.shape, generator=self.g))

    report = audit(Noisy().eval(), x[:60], y[:60], eps=0.1, steps=5, noise_samples=2)
    assert "deterministic" in {c.name for c in report.failed_checks}
    probs = nn.Sequential(cnn_model, nn.Softmax(dim=1)).eval()
    report = audit(probs, x[:60], y[:60], eps=0.1, steps=5, noise_samples=2)
    assert not report.passed and [c.name for c in report.failed_checks] == ["logits"]


def test_report_summary_and_dict(cnn_model, digits):
    x, y = _points(digits)
    report = audit(cnn_model, x[:80], y[:80], eps=0.1, steps=5, noise_samples=2)
    text = report.table()
    assert "PASSED" in text and "unbounded_succeeds" in text
    d = report.to_dict()
    assert d["passed"] is True and len(d["checks"]) == 8 and "code_revision" in d["provenance"]


def test_bad_audits(cnn_model, digits):
    x, y = _points(digits)
    with pytest.raises(ValueError, match="missing: iterative"):
        audit(cnn_model, x, y, eps=0.1, attacks={"single_step": PGD(eps=0.1, steps=1)})
    with pytest.raises(ValueError, match="eps"):
        audit(cnn_model, x, y, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        audit(cnn_model, x, y, eps=-1.0)


def test_audit_attacks_must_be_white_box_and_bounded(cnn_model, digits):
    from advlab.attacks import DeepFool, PGD as _PGD, SquareAttack

    x, y = digits["x_test"][:20], digits["y_test"][:20]
    with pytest.raises(ValueError, match="minimal-perturbation"):
        audit(cnn_model, x, y, eps=0.1, attacks={"single_step": DeepFool(), "iterative": _PGD(eps=0.1)})
    with pytest.raises(ValueError, match="white-box gradient attack"):
        audit(cnn_model, x, y, eps=0.1, attacks={"single_step": SquareAttack(eps=0.1), "iterative": _PGD(eps=0.1)})


def test_a_model_that_is_not_differentiable_in_x_is_diagnosed_not_a_crash(cnn_model, digits):
    """#11 reproducer: the audit, which exists to diagnose such models, crashed on
    ``(x > 0.5).float()`` with torch's "appears to not have been used in the graph"."""
    class Thresholded(torch.nn.Module):
        def forward(self, x):
            return cnn_model((x > 0.5).to(x.dtype))

    x, y = digits["x_test"][:60], digits["y_test"][:60]
    report = audit(Thresholded().eval(), x, y, eps=0.1, steps=5)
    failed = {c.name for c in report.checks if not c.passed}
    assert not report.passed and {"gradients", "unbounded_succeeds"} <= failed


def test_audit_takes_per_feature_bounds_of_a_table():
    """Reproducer: with per-feature bounds the audit's unbounded check unpacked them as two floats
    and failed; its radius now covers the whole per-feature box."""
    import warnings

    from advlab.data import load_dataset
    from advlab.models import build_seeded, fit

    train, test = load_dataset("breast-cancer", split="train"), load_dataset("breast-cancer", split="test")
    model = build_seeded("tabular-mlp", in_shape=(30,), num_classes=2, seed=0)
    fit(model, train.x, train.y, epochs=10, lr=1e-2, progress=False)
    lo, hi = torch.zeros(30), torch.ones(30)
    hi[:5] = 0.5
    x = test.x[:60].clone()
    x[:, :5] = x[:, :5].clamp(max=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = audit(model, x, test.y[:60], norm="linf", eps=0.05, bounds=(lo, hi))
    unbounded = next(c for c in report.checks if c.name == "unbounded_succeeds")
    assert unbounded.passed and unbounded.values["eps"] == 1.0   # the widest feature's width
