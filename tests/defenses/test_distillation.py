"""Defensive distillation (Papernot et al. 2016): the recipe, distill(), and the lesson that its
apparent robustness is gradient masking (issue #5)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _helpers import accuracy, assert_unchanged, snapshot
from advlab.attacks import FGSM, PGD
from advlab.defenses.distillation import Distillation, distill, soft_cross_entropy
from advlab.defenses.recipe import Standard
from advlab.defenses.training import train
from advlab.evaluation.audit import audit

T = 100.0
pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(seed: int) -> nn.Module:
    """The architecture of conftest's ``mlp_model`` (the standard model compared against)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def distilled(digits):
    x, y = digits["x_train"], digits["y_train"]
    rng = torch.random.get_rng_state()
    result = distill(_mlp, x, y, temperature=T, epochs=30, batch_size=64, lr=2e-2, seed=0,
                     progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is not touched
    return result


def _correct(model, digits, n=300):
    x, y = digits["x_test"][:n], digits["y_test"][:n]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep], y[keep]


def _success(attack, model, x, y) -> float:
    g = torch.Generator().manual_seed(0)
    return attack(model, x, y, generator=g).success.float().mean().item()


def test_distill_trains_teacher_and_student_at_T_and_deploys_at_1(distilled, mlp_model, digits):
    r = distilled
    assert r.temperature == T
    assert r.teacher_history.recipe == {"recipe": "standard", "temperature": T}
    assert r.student_history.recipe["recipe"] == "distill"
    assert r.student_history.recipe["temperature"] == T
    assert r.teacher_history.epochs == r.student_history.epochs == 30
    assert not r.student.training and not r.teacher.training
    x, y = digits["x_test"], digits["y_test"]
    assert accuracy(r.student, x, y) >= 0.9  # measured 0.945
    with torch.no_grad():
        agree = (r.student(x).argmax(1) == r.teacher(x).argmax(1)).float().mean().item()
        # deployed at T = 1: raw logits, about T times larger than a standard network's
        scale_student = r.student(x).abs().amax(1).median().item()
        scale_standard = mlp_model(x).abs().amax(1).median().item()
    assert agree >= 0.95
    assert scale_student >= 20 * scale_standard, (scale_student, scale_standard)  # measured 1061 vs 9.0


def test_ce_attacks_appear_to_fail_while_cw_margin_succeeds(distilled, mlp_model, digits):
    """The lesson: FGSM/PGD with cross-entropy see a zero gradient on the distilled model, PGD
    with the C&W margin loss on the logits breaks it about as often as the standard model."""
    eps = 0.1
    fgsm, pgd = FGSM(eps=eps), PGD(eps=eps, steps=20)
    pgd_cw = PGD(eps=eps, steps=20, loss="cw")
    xs, ys = _correct(mlp_model, digits)
    xd, yd = _correct(distilled.student, digits)
    std = {k: _success(a, mlp_model, xs, ys) for k, a in (("fgsm", fgsm), ("pgd", pgd), ("cw", pgd_cw))}
    dis = {k: _success(a, distilled.student, xd, yd) for k, a in (("fgsm", fgsm), ("pgd", pgd), ("cw", pgd_cw))}
    # measured (288 / 285 points): standard fgsm 0.444, pgd 0.476, cw 0.465;
    # distilled fgsm 0.039, pgd 0.046, cw 0.449
    assert std["fgsm"] >= 0.3 and std["pgd"] >= 0.3
    assert dis["fgsm"] <= 0.25 * std["fgsm"], (std, dis)
    assert dis["pgd"] <= 0.25 * std["pgd"], (std, dis)
    assert dis["cw"] >= 0.75 * std["pgd"], (std, dis)
    assert dis["cw"] >= 4 * max(dis["pgd"], 0.02), (std, dis)
    # the mechanism: the cross-entropy's input gradient is exactly zero on most points
    xg = xd.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(distilled.student(xg), yd, reduction="sum"), xg)
    zero = (g.flatten(1) == 0).all(1).float().mean().item()
    assert zero >= 0.5, zero
    xg = xs.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(mlp_model(xg), ys, reduction="sum"), xg)
    assert (g.flatten(1) == 0).all(1).float().mean().item() == 0.0


def test_audit_flags_the_distilled_model(distilled, digits):
    x, y = digits["x_test"][:200], digits["y_test"][:200]
    before = snapshot(distilled.student)
    report = audit(distilled.student, x, y, norm="linf", eps=0.1, steps=5)
    assert not report.passed
    assert "gradients" in {c.name for c in report.failed_checks}, report.table()
    assert "C&W" in report.check("gradients").advice
    assert_unchanged(distilled.student, before)


def test_teacher_is_left_unchanged_by_student_training(distilled, digits):
    teacher = distilled.teacher
    teacher.train()  # even a teacher left in training mode is read in eval mode and restored
    before = snapshot(teacher)
    x, y = digits["x_train"][:256], digits["y_train"][:256]
    recipe = Distillation(teacher=teacher, temperature=T)
    student = _mlp(5)
    train(student, recipe, x, y, epochs=1, batch_size=64, lr=1e-2, seed=0, progress=False)
    assert_unchanged(teacher, before)
    assert teacher.training
    teacher.eval()


def test_batch_loss_is_the_soft_cross_entropy_at_T(distilled, digits):
    x, y = digits["x_train"][:64], digits["y_train"][:64]
    teacher = distilled.teacher
    student = _mlp(7).train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        soft = torch.softmax(teacher(x) / T, 1)
        logits = student(x)
    expected = -(soft * torch.log_softmax(logits / T, 1)).sum(1).mean()
    loss, logs = Distillation(teacher=teacher, temperature=T).batch_loss(student, x, y, generator=g)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7)
    assert math.isclose(logs["loss"], float(expected), rel_tol=1e-6)
    w = 0.3
    mixed, _ = Distillation(teacher=teacher, temperature=T, hard_label_weight=w).batch_loss(
        student, x, y, generator=g)
    hard = F.cross_entropy(logits / T, y)
    assert torch.allclose(mixed, (1 - w) * expected + w * hard, rtol=1e-6, atol=1e-7)
    assert torch.allclose(soft_cross_entropy(logits / T, soft), expected)


def test_student_equal_to_teacher_is_a_stationary_point(distilled, digits):
    """softCE(s/T, softmax(t/T)) has gradient (softmax(s/T) − softmax(t/T))/T in the logits:
    zero when the student computes what the teacher does."""
    x, y = digits["x_train"][:128], digits["y_train"][:128]
    student = _mlp(0)
    student.load_state_dict(distilled.teacher.state_dict())
    loss, _ = Distillation(teacher=distilled.teacher, temperature=T).batch_loss(
        student.train(), x, y, generator=torch.Generator())
    grads = torch.autograd.grad(loss, list(student.parameters()))
    assert max(float(gr.abs().max()) for gr in grads) < 1e-6
    with torch.no_grad():  # and the loss is then the teacher's entropy at T
        p = torch.softmax(distilled.teacher(x) / T, 1)
        entropy = -(p * torch.log(p)).sum(1).mean()
    assert torch.allclose(loss.detach(), entropy, rtol=1e-5)


def test_distill_is_deterministic_and_takes_a_trained_teacher(distilled, digits):
    x, y = digits["x_train"][:300], digits["y_train"][:300]
    runs = [distill(_mlp, x, y, temperature=20.0, epochs=2, batch_size=64, lr=1e-2, seed=3,
                    progress=False, teacher=distilled.teacher) for _ in range(2)]
    assert runs[0].teacher_history is None and runs[0].teacher is distilled.teacher
    for a, b in zip(runs[0].student.state_dict().values(), runs[1].student.state_dict().values()):
        assert torch.equal(a, b)
    other = distill(_mlp, x, y, temperature=20.0, epochs=2, batch_size=64, lr=1e-2, seed=4,
                    progress=False, teacher=distilled.teacher)
    assert not torch.equal(other.student[1].weight, runs[0].student[1].weight)


def test_card_records_the_teacher(distilled):
    card = Distillation(teacher=distilled.teacher, temperature=T, hard_label_weight=0.1).card()
    assert json.loads(json.dumps(card)) == card
    assert card["recipe"] == "distill" and card["temperature"] == T and card["hard_label_weight"] == 0.1
    assert card["teacher"] == "Sequential" and len(card["teacher_sha256"]) == 64
    other = Distillation(teacher=_mlp(99), temperature=T).card()
    assert other["teacher_sha256"] != card["teacher_sha256"]


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan"), float("inf"), True, "100"])
def test_bad_temperature_is_refused(temperature, digits):
    with pytest.raises(ValueError, match="temperature"):
        Distillation(teacher=_mlp(0), temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        distill(_mlp, digits["x_train"][:10], digits["y_train"][:10], temperature=temperature, epochs=1)


def test_bad_distillation_inputs(digits):
    x, y = digits["x_train"][:8], digits["y_train"][:8]
    teacher = _mlp(0)
    g = torch.Generator()
    with pytest.raises(ValueError, match="hard_label_weight"):
        Distillation(teacher=teacher, hard_label_weight=1.5)
    with pytest.raises(TypeError, match="teacher"):
        Distillation(teacher="resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different network"):
        Distillation(teacher=teacher).batch_loss(teacher, x, y, generator=g)
    with pytest.raises(ValueError, match="x_unlabelled"):
        Distillation(teacher=teacher).batch_loss(_mlp(1), x, y, generator=g, x_unlabelled=x)
    with pytest.raises(ValueError, match="same classes"):
        Distillation(teacher=teacher).batch_loss(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x, y, generator=g)
    with pytest.raises(TypeError, match="build_model"):
        distill(_mlp(0), x, y, epochs=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        Standard(temperature=0)


def test_distill_checkpoints_and_saves_the_deployed_student(tmp_path, digits):
    from advlab.models import load
    from advlab.models.zoo import build_seeded

    x, y = digits["x_train"][:64], digits["y_train"][:64]
    result = distill(lambda s: build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=s),
                     x, y, temperature=50.0, epochs=1, batch_size=32, seed=0, progress=False,
                     checkpoint_dir=tmp_path / "runs", save_to=tmp_path / "student", card={"dataset": "digits"})
    assert (tmp_path / "runs" / "teacher" / "state.json").is_file()
    assert (tmp_path / "runs" / "student" / "state.json").is_file()
    loaded = load(tmp_path / "student")
    with torch.no_grad():
        assert torch.equal(loaded(x), result.student(x))  # the raw logits: deployed at T = 1
    card = json.loads((tmp_path / "student" / "card.json").read_text())
    assert card["training"]["recipe"]["recipe"] == "distill"
    assert card["training"]["recipe"]["temperature"] == 50.0
