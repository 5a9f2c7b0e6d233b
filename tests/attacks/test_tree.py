"""The decision-tree attack (Papernot, McDaniel & Goodfellow 2016), solved exactly: every returned
point is misclassified by the tree, inside the box, and no point nearer than it is (checked by
dense sampling on low-dimensional trees); plus the contract's invariants, which the registry-wide
contract tests cannot check on their CNN."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from advlab.attacks import PGD, TreeAttack, make_attack
from advlab.models import as_model


@pytest.fixture(scope="module")
def tree(digits):
    x, y = digits["x_train"].flatten(1).numpy(), digits["y_train"].numpy()
    return DecisionTreeClassifier(random_state=0).fit(x, y)


@pytest.fixture(scope="module")
def victim(tree):
    return as_model(tree, input_shape=(1, 8, 8))


def _pred(tree, x: torch.Tensor) -> np.ndarray:
    return tree.predict(x.reshape(x.shape[0], -1).double().numpy())


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_every_point_is_misclassified_by_the_tree_inside_the_box(norm, tree, victim, digits):
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    r = TreeAttack(norm=norm)(victim, x, y)
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1 and r.x_adv.shape == x.shape
    pred = _pred(tree, r.x_adv)
    assert r.success.all()  # an unpruned tree on [0, 1]^64 has reachable leaves of every class
    assert (pred != y.numpy()).all()
    assert torch.equal(r.pred, torch.as_tensor(pred))
    assert torch.allclose(r.norms, r.threat.norm_of(r.x_adv - x))
    # clean mistakes cost nothing
    wrong = torch.as_tensor(_pred(tree, x) != y.numpy())
    assert (r.norms[wrong] == 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_no_nearer_point_is_misclassified_on_a_two_feature_tree(norm):
    rng = np.random.default_rng(0)
    xs = rng.random((400, 2))
    ys = ((xs[:, 0] > 0.5) ^ (xs[:, 1] > 0.3)).astype(int) + (xs[:, 0] > 0.8) * 1
    ys = np.minimum(ys, 2)
    tree = DecisionTreeClassifier(max_depth=5, random_state=0).fit(xs, ys)
    model = as_model(tree, input_shape=(2,))
    x = torch.as_tensor(rng.random((25, 2)), dtype=torch.float32)
    y = torch.as_tensor(tree.predict(x.double().numpy()))
    r = TreeAttack(norm=norm)(model, x, y)
    assert r.success.all()
    assert (tree.predict(r.x_adv.double().numpy()) != y.numpy()).all()
    # dense samples of the ball of radius 0.995 * d around each point: none is misclassified
    theta = torch.linspace(0, 2 * math.pi, 721)[:-1]
    circle = torch.stack([theta.cos(), theta.sin()], 1)
    circle = circle / circle.norm(p={"linf": math.inf, "l2": 2, "l1": 1}[norm], dim=1, keepdim=True)
    for i in range(x.shape[0]):
        d = float(r.norms[i])
        radii = torch.linspace(0, 0.995 * d, 60)
        pts = (x[i] + radii[:, None, None] * circle[None]).reshape(-1, 2).clamp(0, 1)
        assert (tree.predict(pts.double().numpy()) == int(y[i])).all(), (i, d)


def test_targeted_points_reach_the_target(tree, victim, digits):
    x, y = digits["x_test"][:60], digits["y_test"][:60]
    target = (y + 3) % 10
    r = TreeAttack(norm="l2")(victim, x, y, target=target)
    assert r.success.all()
    assert (_pred(tree, r.x_adv) == target.numpy()).all()
    untargeted = TreeAttack(norm="l2")(victim, x, y)
    assert (untargeted.norms <= r.norms + 1e-6).all()  # the nearest leaf of any class is nearer


def test_a_margin_keeps_the_point_inside_its_leaf_under_small_noise(tree, victim, digits):
    x, y = digits["x_test"][:60], digits["y_test"][:60]
    r = TreeAttack(norm="linf", margin=0.01)(victim, x, y)
    assert r.success.all()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        noise = (torch.rand(x.shape, generator=g) * 2 - 1) * 0.0099
        moved = r.x_adv + noise
        assert (_pred(tree, moved) != y.numpy()).all()
    exact = TreeAttack(norm="linf")(victim, x, y)
    assert (exact.norms <= r.norms + 1e-7).all()


def test_a_tight_box_leaves_points_unreached_and_unchanged():
    xs = np.array([[0.1], [0.2], [0.8], [0.9]])
    tree = DecisionTreeClassifier().fit(xs, [0, 0, 1, 1])  # threshold 0.5
    model = as_model(tree, input_shape=(1,))
    x = torch.tensor([[0.1], [0.45]])
    r = TreeAttack(norm="linf", bounds=(0.0, 0.5))(model, x, torch.tensor([0, 0]))
    assert not r.success.any() and torch.equal(r.x_adv, x)
    r = TreeAttack(norm="linf", bounds=(0.0, 1.0))(model, x, torch.tensor([0, 0]))
    assert r.success.all()
    # the smallest float32 above the threshold: as near as the tree allows
    assert torch.allclose(r.x_adv[:, 0], torch.tensor([0.5, 0.5]), atol=1e-6)
    assert (r.x_adv[:, 0] > 0.5).all()


def test_nothing_given_changes_and_results_do_not_depend_on_dtype_or_label_type(tree, victim, digits):
    x, y = digits["x_test"][:30], digits["y_test"][:30]
    x0, y0, t0 = x.clone(), y.clone(), copy.deepcopy(tree.tree_.__getstate__())
    rng = torch.get_rng_state()
    victim.train()
    with pytest.warns(UserWarning, match="training mode"):
        first = TreeAttack(norm="l2")(victim, x, y)
    assert victim.training
    victim.eval()
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(torch.get_rng_state(), rng)
    after = tree.tree_.__getstate__()
    assert all(np.array_equal(np.asarray(after[k]), np.asarray(t0[k])) for k in ("nodes", "values"))
    again = TreeAttack(norm="l2")(victim, x, y.to(torch.int32))
    assert torch.equal(first.x_adv, again.x_adv) and again.pred.dtype == torch.int64
    wide = TreeAttack(norm="l2")(victim, x.double(), y)
    assert wide.x_adv.dtype == torch.float64 and wide.success.all()
    assert (_pred(tree, wide.x_adv) != y.numpy()).all()


def test_misuse_is_refused_with_what_works(tree, victim, digits, cnn_model):
    x, y = digits["x_test"][:4], digits["y_test"][:4]
    with pytest.raises(TypeError, match="decision tree"):
        TreeAttack()(cnn_model, x, y)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(
        digits["x_train"].flatten(1).numpy(), digits["y_train"].numpy())
    with pytest.raises(TypeError, match="HopSkipJump"):
        TreeAttack()(as_model(forest, input_shape=(1, 8, 8)), x, y)
    with pytest.raises(ValueError, match="TreeAttack"):
        PGD(eps=0.1)(victim, x, y)
    with pytest.raises(ValueError, match="margin"):
        TreeAttack(margin=-0.1)
    with pytest.raises(ValueError, match="norm"):
        TreeAttack(norm="l0")
    with pytest.raises(ValueError, match="outside the bounds"):
        TreeAttack()(victim, x * 2, y)
    assert isinstance(make_attack("tree", norm="linf"), TreeAttack)
