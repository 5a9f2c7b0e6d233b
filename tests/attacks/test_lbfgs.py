"""Szegedy et al.'s box-constrained L-BFGS attack (issue #13, item 1): the closed form on a linear
model, targeted success, the box, determinism, and bad input."""

from __future__ import annotations

import pytest
import torch

from _helpers import assert_unchanged, snapshot, linear_two_class
from advlab.attacks import LBFGS, CarliniWagnerL2, make_attack




def test_on_a_linear_model_the_distance_is_the_exact_box_constrained_minimum():
    """Two classes, f(x) = Wx + b: when the nearest point of the boundary lies inside the box,
    the smallest L2 change of class is the distance to the hyperplane, |w·x + b| / ||w||.
    L-BFGS must come within 1% of it (and, being a point of the box, never below it)."""
    model = linear_two_class()
    w = (model[1].weight[1] - model[1].weight[0]).detach()
    b = (model[1].bias[1] - model[1].bias[0]).detach()
    g = torch.Generator().manual_seed(1)
    x0 = 0.45 + 0.1 * torch.rand(24, 16, generator=g)
    on_plane = x0 - ((x0 @ w + b) / w.dot(w))[:, None] * w            # the foot of each point
    d = 0.02 + 0.08 * torch.rand(24, generator=g)
    side = torch.where(torch.rand(24, generator=g) < 0.5, -1.0, 1.0)
    x = (on_plane + (side * d)[:, None] * w / w.norm()).view(24, 1, 4, 4)
    assert float(on_plane.min()) > 0.0 and float(on_plane.max()) < 1.0   # the foot is in the box
    with torch.no_grad():
        y = model(x).argmax(1)
        exact = (x.flatten(1) @ w + b).abs() / w.norm()
    torch.testing.assert_close(exact, d)
    res = LBFGS(steps=100, binary_search_steps=12, c_init=1e-2)(model, x, y)
    assert bool(res.success.all())
    ratio = res.norms / exact
    assert float(ratio.min()) >= 1.0 - 1e-4, ratio
    assert float(ratio.max()) <= 1.01, ratio


def test_targeted_on_a_trained_model_inside_the_box_and_changes_nothing(cnn_model, digits):
    x, y = digits["x_test"][:16], digits["y_test"][:16]
    target = (y + 1) % 10
    before = snapshot(cnn_model)
    x0 = x.clone()
    rng = torch.get_rng_state()
    res = LBFGS(steps=30, binary_search_steps=5)(cnn_model, x, y, target=target)
    assert_unchanged(cnn_model, before)
    assert torch.equal(x, x0) and torch.equal(torch.get_rng_state(), rng)
    assert float(res.success.float().mean()) >= 0.8
    assert bool((res.pred[res.success] == target[res.success]).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    # the same search with C&W's margin loss and Adam finds perturbations of the same order
    cw = CarliniWagnerL2(steps=100, binary_search_steps=5)(cnn_model, x, y, target=target)
    both = res.success & cw.success
    assert float(res.norms[both].median()) <= 2.0 * float(cw.norms[both].median())
    # deterministic: no randomness at all
    again = LBFGS(steps=30, binary_search_steps=5)(cnn_model, x, y, target=target)
    assert torch.equal(again.x_adv, res.x_adv)


def test_registry_and_bad_input():
    assert isinstance(make_attack("lbfgs"), LBFGS)
    with pytest.raises(ValueError, match="c_init"):
        LBFGS(c_init=0.0)
    with pytest.raises(ValueError, match="steps"):
        LBFGS(steps=0)
    with pytest.raises(ValueError, match="binary_search_steps"):
        LBFGS(binary_search_steps=1.5)
