"""evaluate(): clean/robust accuracy and success rates over ε, denominators, worst case."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.attacks import FGSM, IFGSM, PGD
from advlab.evaluation import evaluate


@pytest.fixture(scope="module")
def ev(cnn_model, digits):
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    attacks = {"FGSM": FGSM(eps=0.0), "PGD": PGD(eps=0.0, steps=10, early_stop=True)}
    return evaluate(cnn_model, x, y, attacks=attacks, eps=[0.0, 0.05, 0.1, 0.2], progress=False)


def test_clean_accuracy_and_denominators(ev, cnn_model, digits):
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    with torch.no_grad():
        correct = int((cnn_model(x).argmax(1) == y).sum())
    for r in ev.rows:
        assert r.n == 300 and r.n_correct == correct
        assert r.clean_accuracy == pytest.approx(correct / 300)
        assert r.robust_accuracy == pytest.approx(r.n_robust / 300)
        assert r.success_rate == pytest.approx((correct - r.n_robust) / correct)
        assert r.robust_accuracy <= r.clean_accuracy


def test_eps_zero_breaks_nothing(ev):
    for name in ("FGSM", "PGD"):
        assert ev.robust_accuracy(name, 0.0) == ev.rows[0].clean_accuracy


def test_rows_match_a_direct_attack(ev, cnn_model, digits):
    """The PGD cell equals running the attack by hand on the correctly classified points."""
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    with torch.no_grad():
        ok = cnn_model(x).argmax(1) == y
    r = PGD(eps=0.1, steps=10, early_stop=True)(cnn_model, x[ok], y[ok],
                                                 generator=torch.Generator().manual_seed(0))
    assert ev.robust_accuracy("PGD", 0.1) == pytest.approx(int((~r.success).sum()) / 300)


def test_worst_case_is_no_better_than_any_attack(ev):
    for e in ev.eps:
        wc = ev.robust_accuracy("worst-case", e)
        assert wc <= min(ev.robust_accuracy(a, e) for a in ("FGSM", "PGD")) + 1e-12
    accs = [ev.robust_accuracy("worst-case", e) for e in ev.eps]
    assert accs[-1] < accs[0]


def test_table_and_json(ev, tmp_path):
    table = ev.table()
    assert "n = 300" in table and "| PGD |" in table and "ε=0.1" in table
    data = json.loads(ev.to_json(str(tmp_path / "ev.json")))
    assert len(data["rows"]) == len(ev.rows)
    assert {"advlab", "torch", "code_revision", "seed"} <= set(data["provenance"])
    assert json.loads((tmp_path / "ev.json").read_text()) == data


def test_early_stop_evaluation_costs_less_for_the_same_answer(cnn_model, digits):
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    kw = dict(eps=[0.1], progress=False)
    fixed = evaluate(cnn_model, x, y, attacks=[IFGSM(eps=0.0, steps=10)], **kw)
    early = evaluate(cnn_model, x, y, attacks=[IFGSM(eps=0.0, steps=10, early_stop=True)], **kw)
    assert early.rows[0].robust_accuracy <= fixed.rows[0].robust_accuracy
    assert early.rows[0].grads < fixed.rows[0].grads


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=[0.1, 0.05]), "increasing"),
    (dict(eps=[]), "at least one eps"),
    (dict(eps=[-0.1, 0.1]), ">= 0"),
    (dict(eps=[0.1], attacks=[]), "at least one attack"),
])
def test_bad_evaluations(cnn_model, digits, kwargs, match):
    x, y = digits["x_test"][:10], digits["y_test"][:10]
    kwargs.setdefault("attacks", [FGSM(eps=0.0)])
    with pytest.raises(ValueError, match=match):
        evaluate(cnn_model, x, y, progress=False, **kwargs)


def test_attacks_by_registry_name_equal_the_configurations(cnn_model, digits):
    x, y = digits["x_test"][:40], digits["y_test"][:40]
    by_name = evaluate(cnn_model, x, y, attacks=["pgd", "fgsm"], eps=[0.1], progress=False)
    by_config = evaluate(cnn_model, x, y, attacks={"PGD": PGD(eps=0.0), "FGSM": FGSM(eps=0.0)},
                         eps=[0.1], progress=False)
    assert by_name.attacks == ["PGD", "FGSM", "worst-case"]
    for a in ("PGD", "FGSM"):
        assert by_name.robust_accuracy(a, 0.1) == by_config.robust_accuracy(a, 0.1)


def test_attacks_without_an_eps_are_refused_with_where_they_belong(cnn_model, digits):
    from advlab.attacks import DeepFool

    x, y = digits["x_test"][:10], digits["y_test"][:10]
    with pytest.raises(ValueError, match="measure_minimal_norms"):
        evaluate(cnn_model, x, y, attacks=[DeepFool()], eps=[0.1], progress=False)
    with pytest.raises(ValueError, match="minimal-perturbation"):
        evaluate(cnn_model, x, y, attacks=["hsj"], eps=[0.1], progress=False)
    with pytest.raises(ValueError, match="unknown attack 'pdg'; did you mean pgd"):
        evaluate(cnn_model, x, y, attacks=["pdg"], eps=[0.1], progress=False)
    with pytest.raises(TypeError, match="not an attack"):
        evaluate(cnn_model, x, y, attacks=[3], eps=[0.1], progress=False)
    with pytest.raises(TypeError, match="a list of attacks"):
        evaluate(cnn_model, x, y, attacks="pgd", eps=[0.1], progress=False)


def test_a_black_box_attack_is_evaluated_through_an_oracle(cnn_model, digits):
    from advlab.attacks import SquareAttack

    x, y = digits["x_test"][:30], digits["y_test"][:30]
    ev = evaluate(cnn_model, x, y, attacks={"Square": SquareAttack(eps=0.1, budget=200)}, eps=[0.02, 0.3],
                  progress=False)
    assert ev.robust_accuracy("Square", 0.3) < ev.robust_accuracy("Square", 0.02) <= ev.rows[0].clean_accuracy
    assert ev.rows[1].grads == 0


def test_simba_is_evaluated_inside_each_eps_ball(cnn_model, digits):
    """#10 reproducer: SimBA's ``eps`` is its step, its ball is ``max_norm``. ``evaluate`` used to
    set the step to each ε and leave the ball unbounded, so points far outside ε counted as broken
    at ε (on this batch: robust accuracy 0.0 at L2 ε = 0.3, median distance of the "broken"
    points 1.01; now 0.85, nothing inside the ball broken). It now sets
    the ball's radius (:func:`advlab.attacks.contract.at_radius`) and checks every broken point
    lies inside the ε-ball it is counted at."""
    from advlab.attacks import SimBA

    x, y = digits["x_test"][:20], digits["y_test"][:20]
    ev = evaluate(cnn_model, x, y, attacks={"SimBA": SimBA(eps=0.5, budget=300)}, eps=[0.3, 3.0],
                  progress=False)
    small, large = ev.rows
    assert small.norm == "l2" and not small.median_norm > 0.3 * (1 + 1e-5)   # (nan: none broken)
    assert large.median_norm <= 3.0 * (1 + 1e-5)
    assert small.robust_accuracy > large.robust_accuracy
    assert "max_norm=0.3" in small.config and "eps=0.5" in small.config   # the step is kept
    by_name = evaluate(cnn_model, x, y, attacks=["simba"], eps=[0.3], progress=False)
    assert "max_norm=0.3" in by_name.rows[0].config


def test_provenance_says_each_attack_ran_at_every_eps(cnn_model, digits):
    """#11: provenance listed attacks built at ε = 0 as ``eps=0.0`` though they ran at every ε."""
    x, y = digits["x_test"][:10], digits["y_test"][:10]
    ev = evaluate(cnn_model, x, y, attacks={"FGSM": FGSM(eps=0)}, eps=[0.05, 0.1], progress=False)
    assert ev.provenance["attacks"]["FGSM"].startswith("FGSM(eps=each of [0.05, 0.1], norm='linf'")
