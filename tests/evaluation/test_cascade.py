"""Cascade: worst case per point over attacks run in turn, the strong evaluation, resuming."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from _helpers import assert_unchanged, snapshot
from advlab.attacks import FGSM, IFGSM, PGD
from advlab.attacks.apgd import APGD, APGDT
from advlab.evaluation import Evaluation
from advlab.evaluation.cascade import Cascade, CascadeResult, strong_attacks, strong_evaluate

EPS = 0.12


@pytest.fixture(scope="module")
def xy(digits):
    return digits["x_test"][:150], digits["y_test"][:150]


@pytest.fixture(scope="module")
def strong(cnn_model, xy):
    x, y = xy
    attacks = strong_attacks(EPS, steps=8, n_target_classes=3)
    return attacks, Cascade(attacks).run(cnn_model, x, y, batch_size=64, progress=False,
                                         generator=torch.Generator().manual_seed(0))


def _robust_acc_alone(attack, model, x, y) -> tuple[float, torch.Tensor]:
    """A member on its own, on all clean-correct points, with the seeds of a cascade's first stage."""
    r = Cascade([attack]).run(model, x, y, batch_size=64, progress=False,
                              generator=torch.Generator().manual_seed(0))
    return r.robust_accuracy, r.broken


def test_cascade_broken_contains_every_member_run_alone(cnn_model, xy):
    """With attacks that are deterministic per point, a point any member breaks on its own is
    broken by the cascade (by that member or an earlier one), so the cascade is no weaker."""
    x, y = xy
    members = {"FGSM": FGSM(eps=EPS), "I-FGSM": IFGSM(eps=EPS, steps=5),
               "PGD-CW": PGD(eps=EPS, steps=10, random_start=False, loss="cw")}
    cascade = Cascade(members).run(cnn_model, x, y, batch_size=64, progress=False,
                                   generator=torch.Generator().manual_seed(0))
    accs = []
    for name, attack in members.items():
        acc, broken = _robust_acc_alone(attack, cnn_model, x, y)
        assert bool((cascade.broken | ~broken).all()), name
        accs.append(acc)
    assert cascade.robust_accuracy <= min(accs)
    # each point is credited to the first member that breaks it, stages only ever lower accuracy
    _, first = _robust_acc_alone(members["FGSM"], cnn_model, x, y)
    assert torch.equal(cascade.broken_by == 0, first)
    stages = cascade.stage_robust_accuracy
    assert all(b <= a for a, b in zip(stages, stages[1:])) and stages[-1] == cascade.robust_accuracy
    assert stages[1] < stages[0]  # I-FGSM adds to FGSM here: the test has teeth


def test_strong_cascade_apgdt_adds_to_apgd_ce(strong, cnn_model, xy):
    attacks, result = strong
    x, y = xy
    ce_alone, ce_broken = _robust_acc_alone(attacks["APGD-CE"], cnn_model, x, y)
    t_alone, t_broken = _robust_acc_alone(attacks["APGD-T"], cnn_model, x, y)
    assert result.names == ("APGD-CE", "APGD-T")
    assert torch.equal(result.broken_by == 0, ce_broken)  # stage 1 is APGD-CE alone, same seeds
    assert result.robust_accuracy < ce_alone  # APGD-T breaks points APGD-CE missed
    assert result.robust_accuracy <= t_alone
    assert result.stage_robust_accuracy == (ce_alone, result.robust_accuracy)


def test_per_point_record_is_consistent(strong, cnn_model, xy):
    _, r = strong
    x, y = xy
    with torch.no_grad():
        correct = cnn_model(x).argmax(1) == y
        pred_adv = cnn_model(r.x_adv).argmax(1)
    assert torch.equal(r.correct, correct)
    assert (r.broken_by[~correct] == -1).all() and (r.num_grads[~correct] == 0).all()
    assert torch.equal(r.broken, correct & (pred_adv != y))  # broken: adversarial; others: clean
    assert torch.equal(r.x_adv[~r.broken], x[~r.broken])
    assert r.threat.contains(r.x_adv, x).all()
    assert r.n == 150 and r.n_robust == int((correct & ~r.broken).sum())
    assert r.robust_accuracy == pytest.approx(r.n_robust / r.n)
    assert r.broken_by_name.count("APGD-T") == int((r.broken_by == 1).sum()) > 0
    # the budget: at most 8 steps of APGD-CE and 3 × 8 of APGD-T per point
    assert r.num_grads.max() <= 8 + 3 * 8 and r.num_grads[r.robust].min() == 8 + 3 * 8
    assert len(r.stage_seconds) == 2 and r.seconds >= sum(r.stage_seconds) > 0


def test_summary_and_rows_state_both_denominators(strong):
    _, r = strong
    text = r.table()
    assert f"({r.n_robust}/{r.n})" in text and f"({r.n_correct}/{r.n})" in text
    assert f"n = {r.n}" in text and "| APGD-T |" in text
    rows = r.rows()
    assert [row.attack for row in rows] == ["APGD-CE", "worst-case"]
    assert rows[-1].robust_accuracy == r.robust_accuracy and rows[-1].n_correct == r.n_correct
    assert "| worst-case |" in Evaluation(rows=rows).table()
    d = r.to_dict()
    assert json.loads(json.dumps(d, default=str))["n_robust"] == r.n_robust


def test_strong_evaluate_is_the_strong_cascade(strong, cnn_model, xy):
    _, r = strong
    x, y = xy
    again = strong_evaluate(cnn_model, x, y, eps=EPS, steps=8, n_target_classes=3, batch_size=64,
                            progress=False, seed=0)
    assert isinstance(again, CascadeResult) and again.names == r.names
    assert torch.equal(again.broken_by, r.broken_by) and torch.equal(again.x_adv, r.x_adv)
    assert again.robust_accuracy == r.robust_accuracy


def test_nothing_given_is_touched(cnn_model, xy):
    x, y = xy[0][:40], xy[1][:40]
    xb, yb, before, rng = x.clone(), y.clone(), snapshot(cnn_model), torch.get_rng_state()
    g = torch.Generator().manual_seed(7)
    a = Cascade(strong_attacks(EPS, steps=3, n_target_classes=2)).run(cnn_model, x, y, generator=g,
                                                                        progress=False)
    assert torch.equal(x, xb) and torch.equal(y, yb) and torch.equal(torch.get_rng_state(), rng)
    assert_unchanged(cnn_model, before)
    b = Cascade(strong_attacks(EPS, steps=3, n_target_classes=2)).run(
        cnn_model, x, y, generator=torch.Generator().manual_seed(7), progress=False)
    assert torch.equal(a.broken_by, b.broken_by) and torch.equal(a.x_adv, b.x_adv)


# -- resuming -----------------------------------------------------------------------------------


class Counting:
    """An attack wrapper that counts the points it is asked to attack."""

    def __init__(self, attack) -> None:
        self.attack, self.points = attack, 0
        self.eps, self.norm, self.bounds = attack.eps, attack.norm, attack.bounds

    def __call__(self, model, x, y, *, generator=None):
        self.points += x.shape[0]
        return self.attack(model, x, y, generator=generator)

    def __repr__(self) -> str:  # the record is keyed on the configuration
        return f"Counting({self.attack!r})"


class Interrupt(Exception):
    pass


def _members():
    return {"APGD-CE": Counting(APGD(eps=EPS, steps=6, early_stop=True)),
            "APGD-T": Counting(APGDT(eps=EPS, steps=6, n_target_classes=3, early_stop=True))}


@pytest.mark.parametrize("stop_at", [(0, 5), (1, 0)])  # after stage 1 / in the middle of stage 2
def test_interrupted_run_resumes_where_it_stopped(cnn_model, xy, tmp_path, stop_at):
    x, y = xy
    full = Cascade(_members()).run(cnn_model, x, y, batch_size=25, progress=False,
                                   generator=torch.Generator().manual_seed(3))

    def interrupt(event):
        if (event["stage"], event["batch"]) == stop_at:
            raise Interrupt

    members = _members()
    with pytest.raises(Interrupt):
        Cascade(members).run(cnn_model, x, y, batch_size=25, progress=False, checkpoint_path=tmp_path,
                             callback=interrupt, generator=torch.Generator().manual_seed(3))
    robust_after_ce = int((full.correct & (full.broken_by != 0)).sum())
    batches = [-(-full.n_correct // 25), -(-robust_after_ce // 25)]  # per stage
    assert batches == [6, 2]  # (the interruption points below are inside the run)
    assert members["APGD-CE"].points == full.n_correct  # stage 1 finished
    stage, batch = stop_at[0], stop_at[1] + 1
    if batch == batches[stage]:
        stage, batch = stage + 1, 0
    meta = json.loads((tmp_path / "record.json").read_text())
    assert (meta["stage"], meta["batch"]) == (stage, batch)
    with safe_open(str(tmp_path / "record.safetensors"), framework="pt") as fh:
        assert set(fh.keys()) == {"correct", "broken_by", "x_adv", "num_grads"}
    first_t = members["APGD-T"].points

    resumed_members = _members()
    resumed = Cascade(resumed_members).run(cnn_model, x, y, batch_size=25, progress=False,
                                           checkpoint_path=tmp_path,
                                           generator=torch.Generator().manual_seed(3))
    assert resumed_members["APGD-CE"].points == 0  # the first stage is not recomputed
    assert first_t + resumed_members["APGD-T"].points == robust_after_ce  # nor any finished batch
    for field in ("correct", "broken_by", "x_adv", "num_grads"):
        assert torch.equal(getattr(resumed, field), getattr(full, field)), field
    assert resumed.provenance["resumed"] and resumed.seconds > 0

    # a finished record is returned as it is, without attacking anything
    again_members = _members()
    again = Cascade(again_members).run(cnn_model, x, y, batch_size=25, progress=False,
                                       checkpoint_path=tmp_path, generator=torch.Generator().manual_seed(3))
    assert again_members["APGD-CE"].points == again_members["APGD-T"].points == 0
    assert torch.equal(again.broken_by, full.broken_by)


def test_a_record_of_another_evaluation_is_refused(cnn_model, linear_model, xy, tmp_path):
    x, y = xy[0][:30], xy[1][:30]
    attacks = strong_attacks(EPS, steps=2, n_target_classes=1)
    Cascade(attacks).run(cnn_model, x, y, batch_size=16, progress=False, checkpoint_path=tmp_path)
    for kwargs, what in [({"batch_size": 8}, "batch_size"), ({"model": linear_model}, "model_sha256"),
                         ({"x": x.flip(0)}, "data_sha256"),
                         ({"generator": torch.Generator().manual_seed(1)}, "seed")]:
        call = {"model": cnn_model, "x": x, "batch_size": 16, **kwargs}
        with pytest.raises(ValueError, match=what):
            Cascade(attacks).run(call.pop("model"), call.pop("x"), y, progress=False,
                                 checkpoint_path=tmp_path, **call)
    with pytest.raises(ValueError, match="configs"):
        Cascade(strong_attacks(EPS, steps=3, n_target_classes=1)).run(
            cnn_model, x, y, batch_size=16, progress=False, checkpoint_path=tmp_path)


# -- misuse -------------------------------------------------------------------------------------


def test_bad_cascades(cnn_model, xy):
    x, y = xy[0][:8], xy[1][:8]
    with pytest.raises(ValueError, match="at least one attack"):
        Cascade([])
    with pytest.raises(ValueError, match="disagree on eps"):
        Cascade([APGD(eps=0.1), APGDT(eps=0.2)])
    with pytest.raises(ValueError, match="disagree on norm"):
        Cascade([APGD(eps=0.1), APGD(eps=0.1, norm="l2")])
    with pytest.raises(TypeError, match="not an attack"):
        Cascade([APGD(eps=0.1), 3])
    with pytest.raises(ValueError, match="batch_size"):
        Cascade([APGD(eps=0.1)]).run(cnn_model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="outside the bounds"):
        Cascade([APGD(eps=0.1)]).run(cnn_model, x * 255, y)
    with pytest.raises(ValueError, match="eps must be"):
        strong_evaluate(cnn_model, x, y, eps=-1.0)
    # names: defaults from the class (and loss), duplicates numbered
    assert Cascade([APGD(eps=0.1), APGD(eps=0.1, loss="dlr"), APGD(eps=0.1)]).names == (
        "APGD-CE", "APGD-DLR", "APGD-CE#2")


class _Quantised(torch.nn.Module):
    """Input quantisation in front of a classifier: the gradient w.r.t. x is zero everywhere."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


def test_square_joins_the_strong_cascade_through_an_oracle(cnn_model, xy):
    """A black-box member is called with an Oracle (never the model) and breaks points that the
    gradient attacks cannot reach when gradients are masked."""
    from advlab.attacks import SquareAttack

    x, y = xy[0][:60], xy[1][:60]
    masked = _Quantised(cnn_model).eval()
    attacks = strong_attacks(0.3, steps=5, n_target_classes=2, square=True, square_budget=300)
    assert isinstance(attacks["Square"], SquareAttack) and attacks["Square"].eps == 0.3
    with pytest.warns(UserWarning, match="gradient is exactly zero"):
        r = Cascade(attacks).run(masked, x, y, batch_size=32, progress=False,
                                 generator=torch.Generator().manual_seed(0))
    assert r.names == ("APGD-CE", "APGD-T", "Square")
    by_square = int((r.broken_by == 2).sum())
    assert by_square > int(((r.broken_by >= 0) & (r.broken_by < 2)).sum())  # Square breaks more than the blinded gradient attacks
    assert by_square > 0  # Square is not
    with torch.no_grad():
        pred = masked(r.x_adv).argmax(1)
    assert bool((pred[r.broken] != y[r.broken]).all())
    assert bool(r.threat.contains(r.x_adv, x).all())


def test_minimal_and_universal_attacks_are_refused_with_the_place_they_belong(cnn_model, xy):
    from advlab.attacks import FMN, DeepFool

    with pytest.raises(ValueError, match="measure_minimal_norms"):
        Cascade([APGD(eps=0.1), DeepFool()])
    with pytest.raises(ValueError, match="minimal-perturbation"):
        Cascade({"fmn": FMN()})


def test_summary_is_scalars_and_table_is_markdown(strong):
    _, r = strong
    s = r.summary()
    assert isinstance(s, dict) and s["n"] == r.n and s["robust_accuracy"] == r.robust_accuracy
    assert "provenance" not in s and r.table().startswith("linf ε=")
