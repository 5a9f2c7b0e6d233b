"""The query-only oracle: budgets, what it leaks, and what it refuses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks._blackbox import score_margin
from advlab.attacks.contract import Attack, Run
from advlab.attacks.score import NES
from advlab.oracle import BudgetExceeded, Oracle, OracleError, as_oracle
from advlab.threat import ThreatModel


def test_scores_and_labels_match_the_model(cnn_model, digits):
    x = digits["x_test"][:20]
    with torch.no_grad():
        logits = cnn_model(x)
    scores = Oracle(cnn_model, output="scores").session(20)(x)
    labels = Oracle(cnn_model, output="label").session(20)(x)
    assert torch.equal(scores, logits)
    assert torch.equal(labels, logits.argmax(1))
    assert labels.dtype == torch.long and labels.shape == (20,)


def test_label_oracle_leaks_only_labels(cnn_model, digits):
    x = digits["x_test"][:8].clone().requires_grad_(True)
    oracle = Oracle(cnn_model, output="label")
    out = oracle.session(8)(x)
    assert out.dim() == 1 and out.dtype == torch.long
    assert not out.requires_grad and out.grad_fn is None
    # nothing public on the oracle reaches the model or its parameters
    public = [getattr(oracle, a) for a in dir(oracle) if not a.startswith("_")]
    assert not any(isinstance(v, nn.Module) or isinstance(v, torch.nn.Parameter) for v in public)
    assert x.grad is None


def test_score_answers_carry_no_graph(cnn_model, digits):
    x = digits["x_test"][:4].clone().requires_grad_(True)
    out = Oracle(cnn_model).session(4)(x)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("seed", range(25))
def test_budget_is_never_exceeded(seed, linear_model, digits):
    g = np.random.default_rng(seed)
    n, budget = int(g.integers(1, 12)), int(g.integers(1, 30))
    oracle = Oracle(linear_model, output="label", budget=budget)
    session = oracle.session(n)
    x = digits["x_test"][:64]
    answered = np.zeros(n, dtype=int)
    for _ in range(60):
        k = int(g.integers(1, 3 * n + 1))
        idx = torch.as_tensor(g.integers(0, n, size=k))
        cost = np.bincount(idx.numpy(), minlength=n)
        before = session.queries.clone()
        if np.any(answered + cost > budget):
            with pytest.raises(BudgetExceeded) as info:
                session(x[:k], idx)
            assert torch.equal(session.queries, before)        # a refused query counts nothing
            assert bool((answered[info.value.points.numpy()] + cost[info.value.points.numpy()] > budget).all())
        else:
            session(x[:k], idx)
            answered += cost
        assert torch.equal(session.queries, torch.as_tensor(answered))
        assert int(session.queries.max()) <= budget
        assert torch.equal(session.remaining, budget - torch.as_tensor(answered))
    assert oracle.total_queries == int(answered.sum())


def test_sessions_count_separately_and_unlimited_budget(linear_model, digits):
    oracle = Oracle(linear_model)
    a, b = oracle.session(3), oracle.session(3)
    a(digits["x_test"][:3])
    assert a.queries.tolist() == [1, 1, 1] and b.queries.tolist() == [0, 0, 0]
    assert int(a.remaining.min()) > 10**15 and not bool(a.exhausted().any())


def test_callable_with_numpy_probabilities(linear_model, digits):
    def predict_proba(x: torch.Tensor) -> np.ndarray:   # a scikit-learn-like service
        with torch.no_grad():
            return torch.softmax(linear_model(x), 1).numpy().astype(np.float64)

    x = digits["x_test"][:10]
    scores = Oracle(predict_proba).session(10)(x)
    assert scores.dtype == torch.float32 and scores.shape == (10, 10)
    assert torch.allclose(scores.sum(1), torch.ones(10), atol=1e-5)
    labels = Oracle(predict_proba, output="label").session(10)(x)
    assert torch.equal(labels, scores.argmax(1))


def test_batch_size_splits_without_changing_answers(cnn_model, digits):
    x = digits["x_test"][:37]
    assert torch.allclose(Oracle(cnn_model, batch_size=5).session(37)(x),
                          Oracle(cnn_model).session(37)(x), atol=1e-5)


def test_training_mode_model_is_queried_in_eval_and_restored(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Dropout(0.5), nn.Linear(32, 10))
    model.train()
    before = snapshot(model)
    oracle = Oracle(model)
    with pytest.warns(UserWarning, match="training mode"):
        a = oracle.session(5)(digits["x_test"][:5])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # once per oracle, not once per query
        b = oracle.session(5)(digits["x_test"][:5])
    assert torch.equal(a, b)               # eval mode: deterministic, no batch statistics
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad, match", [
    (lambda x: torch.zeros(x.shape[0], 1), "at least 2 classes"),
    (lambda x: torch.zeros(x.shape[0] + 1, 10), "expected scores"),
    (lambda x: torch.full((x.shape[0], 10), float("nan")), "NaN or Inf"),
    (lambda x: torch.zeros(x.shape[0], dtype=torch.long), "labels, not a score vector"),
    (lambda x: torch.zeros(x.shape[0], 3, 3), "expected scores"),
])
def test_bad_callables_are_named(bad, match, digits):
    with pytest.raises(OracleError, match=match):
        Oracle(bad).session(4)(digits["x_test"][:4])


def test_label_callable_may_return_labels(digits):
    oracle = Oracle(lambda x: torch.ones(x.shape[0], dtype=torch.long), output="label")
    assert oracle.session(3)(digits["x_test"][:3]).tolist() == [1, 1, 1]


@pytest.mark.parametrize("kwargs, match", [
    ({"budget": 0}, "budget must be an integer >= 1"),
    ({"budget": -5}, "budget must be an integer >= 1"),
    ({"budget": 2.5}, "budget must be an integer >= 1"),
    ({"output": "probs"}, "output must be"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_construction(kwargs, match, linear_model):
    with pytest.raises(ValueError, match=match):
        Oracle(linear_model, **kwargs)


def test_bad_queries(linear_model, digits):
    s = Oracle(linear_model).session(3)
    with pytest.raises(ValueError, match="one row per point"):
        s(digits["x_test"][:4])
    with pytest.raises(ValueError, match="outside"):
        s(digits["x_test"][:2], torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        s(torch.full((3, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="n >= 1"):
        Oracle(linear_model).session(0)


def test_attacks_refuse_models_and_label_oracles_for_score_attacks(linear_model, digits):
    with pytest.raises(TypeError, match="not a model"):
        as_oracle(linear_model)
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    oracle = Oracle(linear_model, output="label")
    with pytest.raises(ValueError, match="score-based attack"):
        NES(eps=0.1)(oracle, x, y)
    with pytest.raises(ValueError, match="outside the bounds"):
        NES(eps=0.1)(Oracle(linear_model), x * 3, y)
    assert oracle.total_queries == 0


def test_score_margin_sign_matches_argmax():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(200, 7, generator=g)
    y = torch.randint(0, 7, (200,), generator=g)
    t = (y + 1) % 7
    assert torch.equal(score_margin(s, y, None) > 0, s.argmax(1) != y)
    assert torch.equal(score_margin(s, y, t) > 0, s.argmax(1) == t)


@dataclass(frozen=True)
class _Dummy(Attack):
    """A label-only core that asks twice for points 0 and 1, once for the others, and answers
    point 0 as misclassified."""

    access: ClassVar[str] = "labels"
    steps: int = 1

    def _core(self, run: Run) -> None:
        run.session(run.x)
        run.session(run.x[:2], torch.tensor([0, 1]))
        everyone = torch.arange(run.x.shape[0])
        run.record.record(everyone, run.x, None, torch.zeros(4, dtype=torch.bool))
        run.record.set_labels(everyone, torch.where(everyone == 0, (run.y + 1) % 10, run.y))


def test_lifecycle_reports_budget_and_never_counts_it_as_success(linear_model, digits):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    r = _Dummy()(Oracle(linear_model, output="label", budget=2), x, y)
    assert r.success.tolist() == [True, False, False, False]
    assert r.queries.tolist() == [2, 2, 1, 1]
    assert r.budget_exhausted.tolist() == [False, True, False, False]
    assert r.num_grads.sum() == 0 and torch.isnan(r.confidence).all()
    assert torch.equal(r.num_forwards, r.queries) and r.threat == ThreatModel(norm="l2", eps=math.inf)
