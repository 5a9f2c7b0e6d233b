"""What every black-box attack shares: validating a call, reading oracle answers, building the result.

A black-box attack receives an :class:`advlab.oracle.Oracle`, never a model. It opens one
:class:`~advlab.oracle.QuerySession` per call, checks ``session.remaining`` before each query,
stops the points whose budget is spent (``exhausted``), and builds its result with :func:`finish`,
which fills ``queries`` and ``budget_exhausted``. ``num_grads`` is zero (no gradient was ever
available) and ``num_forwards`` equals ``queries``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from advlab._checks import check_inputs
from advlab.attacks._base import AttackResult, config_repr
from advlab.oracle import Oracle, QuerySession, as_oracle
from advlab.threat import ThreatModel


def prepare(oracle: Any, x: Any, y: Any, *, bounds: tuple[float, float], target: Any = None,
            generator: torch.Generator | None = None, needs: str | None = None) -> tuple[Oracle, QuerySession]:
    """Validate a black-box call and open its query session.

    ``needs="scores"`` refuses a label-only oracle with a message that names the attack family.
    """
    oracle = as_oracle(oracle)
    check_inputs(None, x, y, bounds=bounds, target=target, generator=generator)
    if needs == "scores" and oracle.output != "scores":
        raise ValueError("this is a score-based attack: it needs Oracle(..., output='scores'); with a "
                         "label-only oracle use a decision-based attack (HopSkipJump, BoundaryAttack)")
    return oracle, oracle.session(int(x.shape[0]))  # type: ignore[union-attr]


def adversarial_labels(labels: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """``(k,)`` bool: the answered labels fool the model (untargeted) or hit the target."""
    return labels == target if target is not None else labels != y


def score_margin(scores: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """``(k,)`` margin that is > 0 exactly when the top class is adversarial.

    Untargeted: ``max_{j≠y} s_j − s_y``; targeted: ``s_t − max_{j≠t} s_j``. On logits this is the
    C&W margin; on probabilities it has the same sign. Score-based attacks minimise its negative.
    """
    cls = target if target is not None else y
    own = scores.gather(1, cls[:, None]).squeeze(1)
    other = scores.scatter(1, cls[:, None], -math.inf).amax(dim=1)
    return own - other if target is not None else other - own


def check_label_range(labels: Tensor, num_classes: int | None, name: str = "y") -> None:
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise ValueError(f"{name} contains class {int(labels.max())} but the oracle answers "
                         f"{num_classes} classes (0..{num_classes - 1})")


def finish(config: Any, threat: ThreatModel, x: Tensor, x_adv: Tensor, *, session: QuerySession,
           success: Tensor, pred: Tensor, confidence: Tensor | None = None,
           target: Tensor | None = None, exhausted: Tensor | None = None) -> AttackResult:
    """Build a black-box :class:`AttackResult`; checks the threat model on every output.

    ``success``/``pred`` must come from oracle answers on the returned ``x_adv`` (the attacks keep
    the answer of the best point found, so no extra query is needed). ``confidence`` is NaN where
    the oracle answers labels only.
    """
    if not bool(threat.contains(x_adv, x).all()):
        raise AssertionError("internal error: a black-box attack returned points outside its threat "
                             "model; please report this")
    queries = session.queries.to(x.device)
    if exhausted is None:
        exhausted = session.exhausted()
    exhausted = exhausted.to(x.device) & ~success
    if confidence is None:
        confidence = torch.full((x.shape[0],), math.nan, device=x.device)
    return AttackResult(
        x_adv=x_adv.detach(), success=success.detach().clone(), pred=pred.detach().clone(),
        confidence=confidence.detach(), norms=threat.norm_of(x_adv - x).detach(),
        num_grads=torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
        num_forwards=queries.clone(), threat=threat, attack=config_repr(config),
        target=None if target is None else target.clone(), queries=queries,
        budget_exhausted=exhausted)
