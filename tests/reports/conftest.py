"""Hand-built results for the report tests: an Evaluation from EvalRow objects and an AttackResult.

Nothing here runs a model or an attack, so the report tests check rendering alone.
"""

from __future__ import annotations

import pytest
import torch

from advlab.attacks import AttackResult
from advlab.evaluation import EvalRow, Evaluation
from advlab.threat import ThreatModel

N, N_CORRECT = 200, 180
# attack -> n_robust at eps 0, 0.05, 0.1
ROBUST = {"FGSM": (180, 141, 77), "PGD": (180, 128, 33), "worst-case": (180, 125, 30)}
EPS = (0.0, 0.05, 0.1)
CLASS_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]


def make_rows(eps=EPS, robust=None, n=N, n_correct=N_CORRECT, norm="linf") -> list[EvalRow]:
    robust = robust or ROBUST
    rows = []
    for j, e in enumerate(eps):
        for name, counts in robust.items():
            k = counts[j]
            broken = n_correct - k
            rows.append(EvalRow(
                attack=name, eps=e, norm=norm, n=n, n_correct=n_correct, n_robust=k,
                clean_accuracy=n_correct / n, robust_accuracy=k / n,
                success_rate=broken / n_correct,
                median_norm=float("nan") if broken == 0 or name == "worst-case" else 0.9 * e,
                mean_norm=float("nan") if broken == 0 or name == "worst-case" else 0.8 * e,
                grads=10 * n_correct + j, seconds=0.25 + j,
                config="any of: FGSM, PGD" if name == "worst-case"
                else f"{name}(eps={e}, norm='linf', bounds=(0.0, 1.0))"))
    return rows


@pytest.fixture()
def evaluation() -> Evaluation:
    return Evaluation(rows=make_rows(), provenance={
        "advlab": "0.1.0", "torch": "2.13.0+cpu", "python": "3.11.7",
        "code_revision": "0123456789abcdef0123456789abcdef01234567", "created": "2025-01-01T00:00:00Z",
        "seed": 1234, "batch_size": 256, "norm": "linf",
        "attacks": {"FGSM": "FGSM(eps=0.0)", "PGD": "PGD(eps=0.0, steps=10)"}})


@pytest.fixture()
def images() -> torch.Tensor:
    """(4, 1, 8, 8) in [0, 1]: smooth ramps, so every pixel is strictly inside the box."""
    ramp = torch.linspace(0.2, 0.8, 64).reshape(1, 1, 8, 8)
    return torch.cat([ramp, ramp.flip(-1), ramp.transpose(-1, -2), 1 - ramp])


@pytest.fixture()
def attack_result(images) -> AttackResult:
    """An L∞ result with eps = 0.1 whose δ is ±0.1 (a checkerboard sign pattern)."""
    signs = torch.ones(8, 8)
    signs[::2, ::2] = -1
    signs[1::2, 1::2] = -1
    delta = 0.1 * signs.expand(4, 1, 8, 8)
    return AttackResult(
        x_adv=images + delta,
        success=torch.tensor([False, True, True, False]),
        pred=torch.tensor([5, 7, 0, 9]),
        confidence=torch.tensor([0.50, 0.9712, 0.6, 0.333]),
        norms=torch.tensor([0.1, 0.1, 0.1, 0.1]),
        num_grads=torch.full((4,), 10, dtype=torch.int64),
        num_forwards=torch.full((4,), 11, dtype=torch.int64),
        threat=ThreatModel(norm="linf", eps=0.1, bounds=(0.0, 1.0)),
        attack="PGD(eps=0.1, norm='linf', steps=10)",
    )


@pytest.fixture()
def clean() -> dict[str, torch.Tensor]:
    """Clean predictions for ``images``: points 1 and 2 change class under the attack above."""
    return {"pred": torch.tensor([5, 9, 3, 9]), "conf": torch.tensor([0.971, 0.88, 0.7549, 0.99]),
            "y": torch.tensor([5, 9, 3, 9])}
