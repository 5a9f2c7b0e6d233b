"""perturb(): the adversarial inputs alone, bit-identical to the attack's, without the scoring pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _helpers import assert_unchanged, snapshot
from advlab.attacks import FGSM, IFGSM, MIFGSM, PGD, perturb


class Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.grad_rows, self.nograd_rows = inner, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.grad_rows += x.shape[0]
        else:
            self.nograd_rows += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("attack", [
    FGSM(eps=0.1), IFGSM(eps=0.1, steps=5), MIFGSM(eps=0.1, steps=5),
    PGD(eps=0.1, steps=7), PGD(eps=1.0, norm="l2", steps=7), PGD(eps=5.0, norm="l1", steps=4),
])
def test_same_points_and_only_the_gradient_passes(attack, cnn_model, digits):
    x, y = digits["x_test"][:50], digits["y_test"][:50]
    full = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(3))
    counter = Counting(cnn_model).eval()
    before = snapshot(cnn_model)
    x_adv = perturb(attack, counter, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x_adv, full.x_adv)
    steps = getattr(attack, "steps", 1)
    assert counter.grad_rows == steps * 50 and counter.nograd_rows == 0
    assert_unchanged(cnn_model, before)
    # the flag does not leak: a plain call afterwards still scores its result
    again = attack(counter, x, y, generator=torch.Generator().manual_seed(3))
    assert counter.nograd_rows == 50 and torch.equal(again.success, full.success)


def test_attacks_that_need_predictions_still_score(cnn_model, digits):
    x, y = digits["x_test"][:40], digits["y_test"][:40]
    for attack in (PGD(eps=0.1, steps=5, early_stop=True), PGD(eps=0.1, steps=5, restarts=2)):
        full = attack(cnn_model, x, y, generator=torch.Generator().manual_seed(0))
        assert torch.equal(perturb(attack, cnn_model, x, y, generator=torch.Generator().manual_seed(0)),
                           full.x_adv)


def test_targeted(cnn_model, digits):
    x, y = digits["x_test"][:30], digits["y_test"][:30]
    t = (y + 1) % 10
    a = MIFGSM(eps=0.2, steps=5)
    assert torch.equal(perturb(a, cnn_model, x, y, target=t), a(cnn_model, x, y, target=t).x_adv)
