"""The one gradient step loop that FGSM, I-FGSM, PGD and MI-FGSM (and their L2/L1, targeted and
ensemble forms) share.

One step, for the objective ``J`` to ascend (see :mod:`advlab.losses`):

    g_t      = ∇_x J(x_t)                                   (one forward + backward pass)
    m_t      = μ · m_{t-1} + g_t / mean|g_t|                (momentum, MI-FGSM only)
    x_{t+1}  = Π_{B_ε(x) ∩ [lo, hi]} (x_t + α · dir_p(m_t)) (dir_p: steepest ascent, see ThreatModel)

Gradients are taken with ``torch.autograd.grad`` with respect to the input only, so parameters'
``.grad`` are never written and weight gradients are never computed. In evaluation mode
(``early_stop=True``) each step's forward pass also tells which points already succeed; those are
frozen and dropped from the batch, so later steps cost only what the still-robust points need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from advlab._checks import check_logits, input_grad
from advlab.attacks.contract import Record
from advlab.attacks.criteria import Criterion, default_criterion
from advlab.losses import LossFn, objective
from advlab.threat import ThreatModel

LoopState = Record  # the per-point record; the old name stays for one release


@dataclass(frozen=True)
class Schedule:
    """How the loop runs: everything that differs between the gradient attacks."""

    steps: int
    step_size: float
    momentum: float | None = None  # MI-FGSM decay μ; None: plain gradient steps
    early_stop: bool = False
    l1_sparsity: float = 0.05
    random_start: bool = False  # start each run from a uniform point of the ball
    restarts: int = 1  # runs from fresh random starts on the points still robust


@dataclass(frozen=True)
class StepInfo:
    """What the per-step hook of :func:`gradient_loop` sees after each step.

    ``idx`` ``(k,)``: the points still in the loop; ``x_before``/``x_after`` ``(k, *)`` the iterate
    before and after the (projected) update; ``grad`` the raw input gradient and ``direction`` the
    unit step direction (``dir_p`` of the gradient or of MI-FGSM's momentum).
    """

    step: int
    idx: Tensor
    x_before: Tensor
    x_after: Tensor
    grad: Tensor
    direction: Tensor


StepHook = Callable[[StepInfo], None]


def _adversarial(criterion: Criterion, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    probs = torch.softmax(logits, dim=1) if criterion.requires_scores() else None
    return criterion(logits.argmax(dim=1), probs, y, target)


def gradient_loop(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *,
                  x_init: Tensor, threat: ThreatModel, loss: LossFn, schedule: Schedule,
                  state: Record, idx: Tensor, check_first: bool = True, score: bool = True,
                  criterion: Criterion | None = None, on_step: StepHook | None = None) -> None:
    """Run ``schedule.steps`` gradient steps from ``x_init`` on the points ``idx`` of ``state``.

    ``x``, ``y``, ``target`` and ``x_init`` hold only the points ``idx``. Results are written into
    ``state`` at ``idx``. With ``early_stop`` a point is frozen at the first iterate where it
    succeeds; otherwise every point takes all steps and the last iterate is returned.
    ``score=False`` (fixed budget only) skips the forward pass on the last iterate: ``state``
    then holds ``x_adv`` and the pass counts but no prediction (see :func:`advlab.attacks.perturb`).
    ``criterion`` decides success (default: misclassified, or the target hit); ``on_step`` is
    called after every step with a :class:`StepInfo`.
    """
    if criterion is None:
        criterion = default_criterion(target)
    x_adv = x_init.detach()
    velocity = torch.zeros_like(x) if schedule.momentum is not None else None
    reduce_dims = tuple(range(1, x.dim()))
    early = schedule.early_stop
    for step in range(schedule.steps):
        x_adv.requires_grad_(True)
        check: bool | str = check_first and step == 0
        if check and schedule.random_start:
            check = ("at the random starting points (x plus uniform noise in the ε-ball; the model is "
                     "not finite near the clean inputs)")
        obj, logits = objective(model, x_adv, y, target, loss, check=check)
        leaf, keep = x_adv, None
        if early:
            hit = _adversarial(criterion, logits.detach(), y, target)
            if bool(hit.any()):
                # (the finished points' rows of the backward below are wasted; re-running the
                # forward on the survivors would cost more)
                state.record(idx[hit], x_adv[hit], logits[hit], hit[hit], grads=step, forwards=step + 1)
                keep = ~hit
                if not bool(keep.any()):
                    return
                obj = obj[keep]
                x_adv, x, y, idx = x_adv.detach()[keep], x[keep], y[keep], idx[keep]
                target = target[keep] if target is not None else None
                velocity = velocity[keep] if velocity is not None else None
        # mean over the batch (as peers do) keeps results bit-identical to the reference loop;
        # every step direction below is invariant to the per-batch scale.
        grad = input_grad(obj.mean(), leaf)
        if keep is not None:
            grad = grad[keep]
        if velocity is not None:
            grad = grad / grad.abs().mean(dim=reduce_dims, keepdim=True).clamp_min(1e-30)
            velocity = grad + velocity * schedule.momentum
            grad = velocity
        direction = threat.ascent_direction(grad, x_adv=x_adv, l1_sparsity=schedule.l1_sparsity)
        x_before = x_adv.detach()
        x_adv = x_before + schedule.step_size * direction
        x_adv = threat.project(x_adv, x)
        if on_step is not None:
            on_step(StepInfo(step=step, idx=idx, x_before=x_before, x_after=x_adv.detach(), grad=grad,
                             direction=direction))
    if not score and not early:
        state.record(idx, x_adv, None, torch.zeros_like(idx, dtype=torch.bool),
                     grads=schedule.steps, forwards=schedule.steps)
        return
    # the last iterate has not been evaluated yet: one forward pass, no graph
    with torch.no_grad():
        logits = model(x_adv)
    if check_first and schedule.steps == 0:
        check_logits(logits, y, target)
    state.record(idx, x_adv, logits, _adversarial(criterion, logits, y, target),
                 grads=schedule.steps, forwards=schedule.steps + 1)


def run_schedule(run: Any, schedule: Schedule, loss: LossFn) -> None:
    """The core of every gradient-loop attack: ``schedule`` on the points ``run.todo`` of a
    lifecycle :class:`~advlab.attacks.contract.Run`, with restarts on the points still robust
    (by the run's criterion). Skips the last scoring pass only when the caller wants ``x_adv``
    alone and nothing in the schedule needs predictions."""
    x, y, target, record = run.x, run.y, run.target, run.record
    todo = run.todo
    score = run.score or schedule.restarts > 1 or schedule.early_stop
    for restart in range(schedule.restarts):
        xs, ys = x[todo], y[todo]
        ts = target[todo] if target is not None else None
        x_init = run.threat.random_start(xs, generator=run.generator) if schedule.random_start else xs
        gradient_loop(run.model, xs, ys, ts, x_init=x_init, threat=run.threat, loss=loss,
                      schedule=schedule, state=record, idx=todo, check_first=restart == 0,
                      score=score, criterion=run.criterion, on_step=run.on_step)
        todo = todo[~record.success[todo]]
        if todo.numel() == 0:
            break
