"""What the score-based attacks (Square Attack, SimBA, NES) share: reading score answers, the
objective they maximise, the best point per point, and the first and last steps of their cores.

The first query of every point is the clean input (:func:`start`); it also tells whether the
oracle answers probabilities or logits (``run.probabilities``). At the end the core hands the
best point of each point and the oracle's answer there to the lifecycle (:func:`hand_over`),
which recomputes ``success`` from the criterion on those answers (no extra query).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advlab._checks import check_choice
from advlab.attacks._blackbox import are_probabilities, check_label_range, margin_alias, score_margin
from advlab.attacks.contract import Run

#: the objectives: the C&W margin (:func:`advlab.losses.cw_margin`, what decides success by
#: default) and the cross-entropy of the scores
LOSSES = ("cw", "ce")


def loss_field(config: Any) -> None:
    """Check ``config.loss`` (``"margin"`` is accepted as the deprecated name of ``"cw"``)."""
    margin_alias(config)
    check_choice("loss", config.loss, LOSSES)


def need_images(name: str, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"{name} needs images of shape (B, C, H, W) with H, W >= 2, got "
                         f"shape {tuple(x.shape)}; reshape the inputs (the model may flatten them)")


def log_prob(scores: Tensor, cls: Tensor, probs: bool) -> Tensor:
    """``(k,)`` log-probability of class ``cls`` under the answers, computed without saturating.

    For logits ``log p_c = -softplus(logsumexp_{j≠c} z_j - z_c)``: it keeps resolving changes once
    ``p_c`` rounds to 1 in float32, where ``p_c`` itself (and ``log_softmax``) would not.
    """
    if probs:
        return scores.gather(1, cls[:, None]).squeeze(1).clamp_min(1e-30).log()
    own = scores.gather(1, cls[:, None]).squeeze(1)
    others = scores.scatter(1, cls[:, None], -math.inf).logsumexp(dim=1)
    return -F.softplus(others - own)


def score_objective(scores: Tensor, y: Tensor, target: Tensor | None, loss: str, probs: bool) -> Tensor:
    """``(k,)`` objective the attacker *maximises*: the C&W margin (:func:`score_margin`), or the
    cross-entropy of the true class (targeted: minus that of the target)."""
    if loss == "cw":
        return score_margin(scores, y, target)
    if target is None:
        return -log_prob(scores, y, probs)
    return log_prob(scores, target, probs)


def rows(t: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if t is None else t[idx]


@dataclass
class Best:
    """Per-point record of the best point found, the oracle's answer on it, and whether that
    answer meets the run's criterion."""

    x: Tensor          # (B, *)
    scores: Tensor     # (B, C)
    adv: Tensor        # (B,) bool
    objective: Tensor  # (B,)

    def offer(self, idx: Tensor, x: Tensor, scores: Tensor, adv: Tensor, objective: Tensor) -> None:
        """Keep the offered points where they are better: adversarial beats not adversarial, then
        the higher objective (an adversarial point is only replaced by an adversarial one)."""
        adv_old = self.adv[idx]
        take = (adv & ~adv_old) | ((adv == adv_old) & (objective > self.objective[idx]))
        sel = idx[take]
        self.x[sel] = x[take]
        self.scores[sel] = scores[take]
        self.adv[sel] = adv[take]
        self.objective[sel] = objective[take]


def start(run: Run, budget: int, loss: str) -> tuple[Tensor, Best, Tensor]:
    """Query the clean points and set up the per-point records.

    Returns the per-point query limit ``(B,)`` (the smaller of the attack's ``budget`` and the
    oracle's), the best-so-far record (the clean points) and the clean answers. Sets
    ``run.probabilities`` from these first answers.
    """
    x, y, target, session = run.x, run.y, run.target, run.session
    limit = session.remaining.clamp(max=budget).to(x.device)
    scores = session(x)                        # query 1 of every point: the clean input
    check_label_range(y, session.oracle.num_classes)
    if target is not None:
        check_label_range(target, session.oracle.num_classes, "target")
    run.probabilities = are_probabilities(scores)
    everyone = torch.arange(x.shape[0], device=x.device)
    obj = score_objective(scores, y, target, loss, run.probabilities)
    best = Best(x=x.clone(), scores=scores.clone(), adv=run.adversarial(scores, everyone),
                objective=obj.clone())
    return limit, best, scores


def hand_over(run: Run, best: Best, stopped_by_budget: Tensor) -> None:
    """Record every point's best point and the oracle's answer there for the lifecycle."""
    everyone = torch.arange(run.x.shape[0], device=run.x.device)
    run.record.record(everyone, best.x, best.scores, best.adv)
    run.extras["exhausted"] = stopped_by_budget
