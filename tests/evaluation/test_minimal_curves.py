"""Minimal-norm evaluation: distances per point, robust accuracy at every ε, quantiles, storage."""

from __future__ import annotations

import json
import math

import pytest
import torch

from advlab.attacks import PGD
from advlab.attacks.minimal import CarliniWagnerL2, DeepFool, FMN
from advlab.evaluation.minimal import MinimalNorms, measure, quantiles, robust_accuracy_curve


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_distances(seed: int, n: int = 500) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(n, generator=g, dtype=torch.float64) * 2
    d[torch.rand(n, generator=g) < 0.1] = 0.0
    d[torch.rand(n, generator=g) < 0.1] = math.inf
    d[:20] = torch.tensor([0.25, 0.5, 1.0, 1.5] * 5, dtype=torch.float64)  # ties with the grid
    return d


@pytest.mark.parametrize("seed", range(5))
def test_curve_equals_a_brute_force_count(seed):
    d = _random_distances(seed)
    grid = torch.cat([torch.linspace(0, 2.5, 101, dtype=torch.float64),
                      torch.tensor([0.25, 0.5, 1.0, 1.5, math.inf], dtype=torch.float64)])
    grid = grid[torch.randperm(grid.numel(), generator=torch.Generator().manual_seed(seed))]
    got = robust_accuracy_curve(d, grid)
    brute = torch.tensor([float((d > e).sum()) / d.numel() for e in grid.tolist()], dtype=torch.float64)
    assert torch.equal(got, brute)
    # non-increasing in ε; everything broken only at ε = inf if some point is never broken
    order = torch.argsort(grid)
    assert (got[order].diff() <= 0).all()
    assert got[grid == 0].item() == float((d > 0).sum()) / d.numel()
    assert got[torch.isinf(grid)].item() == 0.0


def test_quantiles_interpolate_and_reach_infinity():
    d = torch.tensor([0.0, 1.0, 2.0, 3.0, math.inf])
    assert quantiles(d, [0.0, 0.25, 0.5, 0.625, 0.75, 1.0]) == [0.0, 1.0, 2.0, 2.5, 3.0, math.inf]
    assert quantiles(d, [0.8]) == [math.inf]  # interpolating towards a never-broken point
    finite = torch.rand(101, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    qs = [0.1, 0.33, 0.5, 0.9]
    assert quantiles(finite, qs) == pytest.approx(torch.quantile(finite, torch.tensor(qs, dtype=torch.float64)).tolist())
    # the median is where the curve crosses one half
    dd = _random_distances(1)
    med = quantiles(dd, [0.5])[0]
    assert float(robust_accuracy_curve(dd, [med])[0]) <= 0.5 < float(robust_accuracy_curve(dd, [med * 0.999])[0])


@pytest.mark.parametrize("bad", [[], [0.1, -1.0], [float("nan")]])
def test_bad_distances(bad):
    with pytest.raises(ValueError):
        robust_accuracy_curve(bad, [0.1])
    with pytest.raises(ValueError, match="eps_grid"):
        robust_accuracy_curve([0.1], [-0.5])


# -- measure() on the digits CNN ---------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(cnn_model, digits):
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    attacks = {"DeepFool": DeepFool(norm="l2", steps=30), "FMN": FMN(norm="l2", steps=40)}
    return measure(cnn_model, x, y, attacks=attacks, norm="l2", batch_size=50, progress=False)


def test_distances_are_the_per_point_minimum_over_attacks(measured, cnn_model, digits):
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    mn = measured
    with torch.no_grad():
        correct = cnn_model(x).argmax(1) == y
    assert torch.equal(mn.correct, correct) and mn.n == 120 and mn.n_correct == int(correct.sum())
    assert (mn.distances[~correct] == 0).all() and (mn.distances[correct] > 0).all()
    stacked = torch.stack([mn.by_attack["DeepFool"], mn.by_attack["FMN"]])
    assert torch.equal(mn.distances, stacked.min(0).values)
    assert set(mn.best_attack[correct].tolist()) <= {0, 1} and (mn.best_attack[~correct] == -1).all()
    # each attack's distances are those of its own run (batches of 50 over the correct points)
    idx = correct.nonzero().squeeze(1)
    r = FMN(norm="l2", steps=40)(cnn_model, x[idx[:50]], y[idx[:50]])
    expected = torch.where(r.success, r.norms.double(), torch.full_like(r.norms.double(), math.inf))
    assert torch.equal(mn.by_attack["FMN"][idx[:50]], expected)
    assert mn.grads["FMN"] == 40 * mn.n_correct and mn.seconds["FMN"] > 0


def test_curve_matches_robust_accuracy_and_clean_accuracy(measured):
    mn = measured
    eps, acc = mn.curve(num=30)
    assert eps[0] == 0 and acc[0] == pytest.approx(mn.clean_accuracy)
    assert (acc.diff() <= 0).all() and acc[-1] == pytest.approx(mn.n_unbroken / mn.n)
    for e in (0.1, 0.4, 0.8):
        assert mn.robust_accuracy(e) == float((mn.distances > e).sum()) / mn.n
    # the combined curve is never above either attack's own curve
    grid = torch.linspace(0, 2, 41)
    combined = mn.robust_accuracy_curve(grid)
    for name in mn.attacks:
        assert (combined <= mn.robust_accuracy_curve(grid, attack=name)).all()
    # the median over the correctly classified points is the one papers report
    correct_only = mn.median(correct_only=True)
    assert correct_only == pytest.approx(float(mn.distances[mn.correct].median()), rel=0.05)
    assert mn.median() <= correct_only


def test_minimal_distances_agree_with_a_fixed_budget_attack(measured, cnn_model, digits):
    """A point with minimal distance d <= ε is broken at ε; PGD at ε can break a few more (it is
    not minimal-norm), but never leaves robust a point the minimal attacks broke at ε / 2."""
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    mn = measured
    eps = mn.median(correct_only=True)
    ok = mn.correct
    r = PGD(eps=eps, norm="l2", steps=40, step_size=eps / 8, random_start=False)(cnn_model, x[ok], y[ok])
    broken_pgd = torch.zeros(mn.n, dtype=torch.bool)
    broken_pgd[ok] = r.success
    assert not (~broken_pgd & (mn.distances <= eps / 2) & ok).any()
    # and both say roughly the same robust accuracy at the median radius
    pgd_acc = float((ok & ~broken_pgd).sum()) / mn.n
    assert abs(pgd_acc - mn.robust_accuracy(eps)) <= 0.15


def test_histogram_and_sorted_distances(measured):
    mn = measured
    h = mn.histogram(bins=10)
    assert len(h["edges"]) == 11 and len(h["counts"]) == 10
    assert sum(h["counts"]) + h["n_zero"] + h["n_inf"] == mn.n == h["n"]
    s = mn.sorted_distances()
    assert (s.diff() >= 0).all() and s.numel() == sum(h["counts"])
    assert mn.histogram(bins=4, value_range=(0.0, 0.1))["counts"] != h["counts"][:4]


def test_json_round_trip_is_strict_json(measured, tmp_path):
    mn = measured
    path = tmp_path / "mn.json"
    text = mn.to_json(str(path))

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    data = json.loads(text, parse_constant=no_constants)
    assert data["summary"]["n"] == mn.n and len(data["distances"]) == mn.n
    assert data["provenance"]["norm"] == "l2" and "FMN" in data["provenance"]["attacks"]
    assert "torch" in data["provenance"] and "code_revision" in data["provenance"]
    assert len(data["curve"]["eps"]) == 50
    back = MinimalNorms.from_json(str(path))
    assert torch.equal(back.distances, mn.distances) and torch.equal(back.correct, mn.correct)
    assert back.by_attack.keys() == mn.by_attack.keys()
    assert back.summary() == mn.summary()
    # a never-broken point survives the trip as inf (stored as null)
    with_inf = MinimalNorms(distances=[0.0, 0.5, math.inf], norm="L2", correct=[False, True, True])
    again = MinimalNorms.from_json(with_inf.to_json())
    assert again.distances.tolist() == [0.0, 0.5, math.inf] and again.n_unbroken == 1
    assert json.loads(with_inf.to_json())["summary"]["q75_correct"] is None


def test_measure_rejects_mixed_norms_and_fixed_budget_attacks(cnn_model, digits):
    x, y = digits["x_test"][:10], digits["y_test"][:10]
    with pytest.raises(ValueError, match="minimises norm"):
        measure(cnn_model, x, y, attacks=[DeepFool(norm="l2"), FMN(norm="linf")], norm="l2", progress=False)
    with pytest.raises(ValueError, match="minimises norm"):
        measure(cnn_model, x, y, attacks=[CarliniWagnerL2()], norm="linf", progress=False)
    with pytest.raises(ValueError, match="fixed-budget"):
        measure(cnn_model, x, y, attacks=[PGD(eps=0.1, norm="l2")], norm="l2", progress=False)
    with pytest.raises(ValueError, match="at least one"):
        measure(cnn_model, x, y, attacks=[], norm="l2", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        measure(cnn_model, x, y, attacks=[FMN()], norm="l2", batch_size=0, progress=False)
    with pytest.raises(ValueError, match="distance 0"):
        MinimalNorms(distances=[0.5], norm="l2", correct=[False])
