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

import torch
from torch import Tensor, nn

from advlab._checks import check_logits
from advlab.losses import LossFn, objective
from advlab.threat import ThreatModel


@dataclass(frozen=True)
class Schedule:
    """How the loop runs: everything that differs between the gradient attacks."""

    steps: int
    step_size: float
    momentum: float | None = None  # MI-FGSM decay μ; None: plain gradient steps
    early_stop: bool = False
    l1_sparsity: float = 0.05


@dataclass
class LoopState:
    """Per-point outputs of the loop, written in place as points finish."""

    x_adv: Tensor
    success: Tensor
    pred: Tensor
    confidence: Tensor
    num_grads: Tensor
    num_forwards: Tensor

    @classmethod
    def empty(cls, x: Tensor) -> "LoopState":
        b = x.shape[0]
        long = dict(dtype=torch.long, device=x.device)
        return cls(x_adv=x.detach().clone(), success=torch.zeros(b, dtype=torch.bool, device=x.device),
                   pred=torch.full((b,), -1, **long), confidence=torch.zeros(b, dtype=x.dtype, device=x.device),
                   num_grads=torch.zeros(b, **long), num_forwards=torch.zeros(b, **long))

    def record(self, idx: Tensor, x_adv: Tensor, logits: Tensor, success: Tensor, *,
               grads: int, forwards: int) -> None:
        """Store the final point, prediction and success of the points ``idx``, and add the
        gradient and forward passes they took in this run of the loop."""
        probs = torch.softmax(logits.detach(), dim=1)
        conf, pred = probs.max(dim=1)
        self.num_grads[idx] += grads
        self.num_forwards[idx] += forwards
        self.x_adv[idx] = x_adv.detach()
        self.pred[idx] = pred
        self.confidence[idx] = conf.to(self.confidence.dtype)
        self.success[idx] = success


def is_success(pred: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return pred != y if target is None else pred == target


def gradient_loop(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, *,
                  x_init: Tensor, threat: ThreatModel, loss: LossFn, schedule: Schedule,
                  state: LoopState, idx: Tensor, check_first: bool = True, score: bool = True) -> None:
    """Run ``schedule.steps`` gradient steps from ``x_init`` on the points ``idx`` of ``state``.

    ``x``, ``y``, ``target`` and ``x_init`` hold only the points ``idx``. Results are written into
    ``state`` at ``idx``. With ``early_stop`` a point is frozen at the first iterate where it
    succeeds; otherwise every point takes all steps and the last iterate is returned.
    ``score=False`` (fixed budget only) skips the forward pass on the last iterate: ``state``
    then holds ``x_adv`` and the pass counts but no prediction (see :func:`advlab.attacks.perturb`).
    """
    x_adv = x_init.detach()
    velocity = torch.zeros_like(x) if schedule.momentum is not None else None
    reduce_dims = tuple(range(1, x.dim()))
    early = schedule.early_stop
    for step in range(schedule.steps):
        x_adv.requires_grad_(True)
        obj, logits = objective(model, x_adv, y, target, loss, check=check_first and step == 0)
        leaf, keep = x_adv, None
        if early:
            hit = is_success(logits.detach().argmax(dim=1), y, target)
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
        grad, = torch.autograd.grad(obj.mean(), leaf)
        if keep is not None:
            grad = grad[keep]
        if velocity is not None:
            grad = grad / grad.abs().mean(dim=reduce_dims, keepdim=True).clamp_min(1e-30)
            velocity = grad + velocity * schedule.momentum
            grad = velocity
        direction = threat.ascent_direction(grad, x_adv=x_adv, l1_sparsity=schedule.l1_sparsity)
        x_adv = x_adv.detach() + schedule.step_size * direction
        x_adv = threat.project(x_adv, x)
    if not score and not early:
        state.x_adv[idx] = x_adv.detach()
        state.num_grads[idx] += schedule.steps
        state.num_forwards[idx] += schedule.steps
        return
    # the last iterate has not been evaluated yet: one forward pass, no graph
    with torch.no_grad():
        logits = model(x_adv)
    if check_first and schedule.steps == 0:
        check_logits(logits, y, target)
    state.record(idx, x_adv, logits, is_success(logits.argmax(dim=1), y, target),
                 grads=schedule.steps, forwards=schedule.steps + 1)
