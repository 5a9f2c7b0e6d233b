"""Auto-PGD: APGD and its targeted form APGD-T (Croce & Hein, ICML 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", Algorithm 1).

APGD is PGD without a step size to tune. From a random point ``x⁽⁰⁾`` of the ε-ball, with
``η⁽⁰⁾ = 2ε`` and momentum ``α = 0.75`` (``α = 1`` on the first step):

    z⁽ᵏ⁺¹⁾ = Π(x⁽ᵏ⁾ + η · dir_p(∇f(x⁽ᵏ⁾)))
    x⁽ᵏ⁺¹⁾ = Π(x⁽ᵏ⁾ + α (z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))

with ``Π`` the projection onto the ball ∩ box and ``dir_∞ = sign``, ``dir_2 = g/‖g‖₂``
(:meth:`advlab.threat.ThreatModel.ascent_direction`). At the checkpoints
``w_j = ⌈p_j N⌉`` (``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``)
a point halves its step size and restarts from its best point ``x_max`` when

1. fewer than a fraction ``ρ`` of the steps since the last checkpoint increased ``f``, or
2. neither ``η`` nor the best objective ``f_max`` changed since the last checkpoint.

Under L1 (``norm="l1"``) the attack is L1-APGD (Croce & Hein, ICML 2021, "Mind the box:
l1-APGD for sparse adversarial attacks on image classifiers"), following their reference code
(``autoattack``'s ``APGDAttack`` with ``norm="L1"``):

* the step moves the ``k`` coordinates of largest ``|g|`` by ``η · sign(g)/k``
  (:func:`advlab.threat.sparse_l1_direction`), leaving out coordinates at a box bound that the step
  would push past, and ``Π`` is the exact projection onto L1-ball ∩ box
  (:func:`advlab.threat.project_l1_ball_box`), not the ball projection followed by a clip;
* no momentum; ``η⁽⁰⁾ = ε``; ``k⁽⁰⁾ = ⌈0.2 d⌉``; the start is Gaussian noise of standard
  deviation ``hi − lo`` projected onto ball ∩ box;
* a checkpoint every ``⌊0.04 N⌋`` iterations (:func:`l1_checkpoints`; ``ρ`` is not used): if
  ``‖x_max − x‖₀`` fell below 95% of its value at the last checkpoint, ``η`` goes back to ``ε``
  and the run restarts from ``x_max``, otherwise ``η ← η/1.5``, with ``η ∈ [ε/10, ε]``; and
  ``k ← ⌈‖x_max − x‖₀ / 1.5⌉``.

The reference's optional schedule of larger radii (``use_largereps``: 3ε, 2ε, then ε) is not
implemented.

Per point the attack returns the first iterate that succeeds, otherwise the highest-objective
point found (over all restarts). Gradients may be averaged over ``eot_iter`` forward/backward
passes (expectation over transformation, Athalye et al. 2018) for randomised models.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``; ``y`` and ``target`` ``(B,)`` int64.
"""

from __future__ import annotations

import warnings

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_number, input_grad, warn
from advlab.attacks.contract import Attack, Record, Run
from advlab.attacks.gradient import check_gradient_config
from advlab.losses import LossFn, get_loss, objective
from advlab.threat import (LOW_PRECISION, Norm, ThreatModel, canonical_norm, per_sample,
                           project_l1_ball_box, sparse_l1_direction)

log = logging.getLogger(__name__)

MOMENTUM = 0.75  # α in the paper, fixed there (Sec. 3.2)
INITIAL_STEP = 2.0  # η⁽⁰⁾ = 2ε
# L1-APGD (Croce & Hein 2021), as in their reference code (autoattack's APGDAttack, norm="L1")
L1_INITIAL_STEP = 1.0  # η⁽⁰⁾ = ε
L1_INITIAL_SPARSITY = 0.2  # k⁽⁰⁾ = ⌈0.2 d⌉ coordinates move per step
L1_CHECK_EVERY = 0.04  # a checkpoint every ⌊0.04 N⌋ (at least 1) iterations
L1_STEP_DECAY = 1.5  # η ← η / 1.5 at a checkpoint where the best point did not get sparser
L1_MIN_STEP = 0.1  # η ∈ [ε / 10, ε]
L1_SPARSER = 0.95  # "sparser": ‖x_best − x‖₀ fell below 95% of its value at the last checkpoint
L1_K_FROM_SPARSITY = 1.5  # k ← ⌈‖x_best − x‖₀ / 1.5⌉


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ⌈p_j · steps⌉`` at which APGD may halve its step size, ``0 < w_j < steps``.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``; for 100 steps:
    ``[22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    p = [0.0, 0.22]
    while True:
        nxt = round(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06), 10)
        if nxt > 1:
            break
        p.append(nxt)
    # round before ceil: 0.22 * 100 is 22.000000000000004 in floating point
    ws = {math.ceil(round(q * steps, 6)) for q in p[1:]}
    return sorted(w for w in ws if 0 < w < steps)


def l1_checkpoints(steps: int) -> list[int]:
    """L1-APGD's checkpoints: every ``max(⌊0.04 N⌋, 1)`` iterations, ``0 < w < N`` (a checkpoint at
    the last iteration would change nothing that is returned). For 100 steps: 4, 8, …, 96."""
    every = max(int(L1_CHECK_EVERY * steps), 1)
    return list(range(every, steps, every))


def l1_box_point(threat: ThreatModel, v: Tensor, x: Tensor) -> Tensor:
    """The nearest point to ``v`` of the L1 ball around ``x`` intersected with the box
    (:func:`~advlab.threat.project_l1_ball_box`, in float64), in ``x``'s dtype.

    Half and bfloat16 then go through :meth:`ThreatModel.project`, which rounds each coordinate
    towards ``x`` so that the point stays in the ball in that dtype (a change of rounding size).
    """
    xd = x.double()
    lo, hi = threat.box(xd)
    # a frozen feature (threat.mask) has no room: its step is zeroed before the projection, so
    # the L1 budget goes to the free features only
    p = threat.clip(xd + project_l1_ball_box(threat.restrict(v.double() - xd), xd, threat.eps, lo, hi))
    if x.dtype in LOW_PRECISION:
        return threat.project(p.to(x.dtype), x)
    return threat.keep_frozen(p.to(x.dtype), x)


def l1_random_start(threat: ThreatModel, x: Tensor, *, generator: torch.Generator | None) -> Tensor:
    """L1-APGD's start: Gaussian noise of standard deviation ``hi − lo`` projected onto ball ∩ box
    (the reference code's ``x + Π(N(0, I))`` for images in [0, 1]): a sparse point on the sphere."""
    lo, hi = threat.box(x)
    noise = torch.empty_like(x).normal_(generator=generator) * (hi - lo)  # per feature, if per-feature
    return l1_box_point(threat, x + noise, x)


def _random_start(threat: ThreatModel, x: Tensor, generator: torch.Generator) -> Tensor:
    if threat.norm == "l1":
        return l1_random_start(threat, x, generator=generator)
    return threat.random_start(x, generator=generator)


def eot_evaluate(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, loss: LossFn, *,
                 eot_iter: int = 1, grad: bool = True, check: bool = False,
                 ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Objective ``(B,)``, its gradient w.r.t. ``x`` ``(B, *)`` (or ``None``) and logits ``(B, C)``,
    each averaged over ``eot_iter`` forward (and backward) passes.

    For a deterministic model ``eot_iter=1`` is exact; for a randomised one the average estimates
    ``E[∇f]`` (expectation over transformation). Each sample's objective is differentiated on its
    own (the sum over the batch), so a point's gradient does not depend on its batch.
    """
    obj_sum: Tensor | None = None
    grad_sum: Tensor | None = None
    logits_sum: Tensor | None = None
    for i in range(eot_iter):
        first = check and i == 0
        if grad:
            leaf = x.detach().requires_grad_(True)
            with torch.enable_grad():
                obj, logits = objective(model, leaf, y, target, loss, check=first)
                g = input_grad(obj.sum(), leaf)
            grad_sum = g if grad_sum is None else grad_sum + g
        else:
            with torch.no_grad():
                obj, logits = objective(model, x, y, target, loss, check=first)
        obj, logits = obj.detach(), logits.detach()
        obj_sum = obj if obj_sum is None else obj_sum + obj
        logits_sum = logits if logits_sum is None else logits_sum + logits
    assert obj_sum is not None and logits_sum is not None
    if eot_iter > 1:
        obj_sum, logits_sum = obj_sum / eot_iter, logits_sum / eot_iter
        grad_sum = grad_sum / eot_iter if grad_sum is not None else None
    return obj_sum, grad_sum, logits_sum


def _apgd_run(model: nn.Module, x: Tensor, y: Tensor, *, loss_target: Tensor | None,
              points: Tensor, decide: Callable[[Tensor, Tensor], Tensor], x_init: Tensor,
              threat: ThreatModel, loss: LossFn, steps: int, rho: float, eot_iter: int,
              early_stop: bool, state: Record, idx: Tensor, warn_zero_grad: bool = False) -> None:
    """One APGD run (Algorithm 1) from ``x_init`` on the rows ``idx`` of ``state``.

    ``loss_target`` is the class the objective aims at (``None``: untargeted); ``points`` the
    call's point behind each row, and ``decide(logits, points)`` the call's success criterion
    (APGD-T aims at a class but its criterion counts any misclassification).
    """
    out = state
    l1 = threat.norm == "l1"
    ws = l1_checkpoints(steps) if l1 else checkpoints(steps)
    wset = set(ws)
    prev_w = {w: (ws[i - 1] if i else 0) for i, w in enumerate(ws)}
    eps = threat.eps
    d = threat.num_free(x)  # the features a step may move

    spent = {"grads": 0, "forwards": 0}  # passes so far by every point still in the run

    def evaluate(x_eval: Tensor, yy: Tensor, lt: Tensor | None, need_grad: bool):
        f, g, z = eot_evaluate(model, x_eval, yy, lt, loss, eot_iter=eot_iter, grad=need_grad)
        spent["forwards"] += eot_iter
        spent["grads"] += eot_iter if need_grad else 0
        return f, g, z

    # active-point tensors, all indexed alike and compressed together when points finish
    t: dict[str, Tensor | None] = {"x": x, "y": y, "lt": loss_target, "pt": points, "idx": idx}
    x_k = x_init.detach()
    f_k, g_k, z_k = evaluate(x_k, y, loss_target, steps > 0)
    if warn_zero_grad and g_k is not None:
        zero = g_k.flatten(1).abs().amax(dim=1) == 0
        if bool(zero.any()):
            warn(f"the gradient is exactly zero at the starting point of {int(zero.sum())} of "
                 f"{zero.numel()} inputs: the attack cannot move them. This is a sign of gradient "
                 "masking (saturated softmax, non-differentiable layers); a black-box attack or "
                 "loss='dlr' may still break them")
    t.update(x_k=x_k, x_prev=x_k, f_k=f_k, g_k=g_k, x_best=x_k, f_best=f_k, g_best=g_k, z_best=z_k,
             eta=torch.full_like(f_k, (L1_INITIAL_STEP if l1 else INITIAL_STEP) * eps),
             n_inc=torch.zeros_like(f_k, dtype=torch.long),
             reduced=torch.zeros_like(f_k, dtype=torch.bool),  # halved at the last checkpoint
             f_best_last=f_k.clone(),
             found=torch.zeros_like(f_k, dtype=torch.bool))
    if l1:  # coordinates moved per step, and ‖x_best − x‖₀ at the last checkpoint
        t.update(topk=torch.full_like(f_k, max(1, math.ceil(L1_INITIAL_SPARSITY * d)), dtype=torch.long),
                 sp_last=torch.full_like(f_k, d, dtype=torch.long))

    def check_success(x_eval: Tensor, z: Tensor) -> bool:
        """Record first successes; with early_stop, drop them. False when no point is left."""
        hit = decide(z, t["pt"]) & ~t["found"]
        if not bool(hit.any()):
            return True
        out.record(t["idx"][hit], x_eval[hit], z[hit], hit[hit])
        if early_stop:
            out.charge(t["idx"][hit], **spent)
            keep = ~hit
            for key, val in t.items():
                if val is not None:
                    t[key] = val[keep]
            return bool(keep.any())
        t["found"] = t["found"] | hit
        return True

    if not check_success(x_k, z_k):
        return
    for k in range(steps):  # produces x⁽ᵏ⁺¹⁾
        a = 1.0 if k == 0 else MOMENTUM
        xs, x_k, x_prev = t["x"], t["x_k"], t["x_prev"]
        if l1:
            # the k largest |g| that can move, sign(g)/k each, projected onto L1-ball ∩ box;
            # no momentum (as the reference code)
            direction = sparse_l1_direction(t["g_k"], t["topk"], x_adv=x_k, bounds=threat.box(x_k),
                                            free=threat.free(x_k))
            x_next = l1_box_point(threat, x_k + per_sample(t["eta"], x_k) * direction, xs)
        else:
            direction = threat.ascent_direction(t["g_k"])
            z = threat.project(x_k + per_sample(t["eta"], x_k) * direction, xs)
            x_next = z if a == 1.0 else threat.project(x_k + a * (z - x_k) + (1 - a) * (x_k - x_prev), xs)
        f_next, g_next, z_next = evaluate(x_next, t["y"], t["lt"], k + 1 < steps)
        # bookkeeping before the success check so that dropped rows leave consistently
        t["n_inc"] = t["n_inc"] + (f_next > t["f_k"]).long()
        better = f_next > t["f_best"]
        t["x_best"] = torch.where(per_sample(better, x_next), x_next, t["x_best"])
        t["f_best"] = torch.where(better, f_next, t["f_best"])
        t["z_best"] = torch.where(better[:, None], z_next, t["z_best"])
        if g_next is not None:
            t["g_best"] = torch.where(per_sample(better, x_next), g_next, t["g_best"])
        t.update(x_prev=x_k, x_k=x_next, f_k=f_next, g_k=g_next)
        if not check_success(x_next, z_next):
            return
        w = k + 1
        if w in wset and l1:
            # L1 (Croce & Hein 2021): a best point that got sparser restarts the step at ε from
            # it; otherwise η shrinks by 1.5, within [ε/10, ε]; k follows the best point's sparsity
            sp = (t["x_best"] - t["x"]).flatten(1).ne(0).sum(dim=1)
            sparser = sp.double() < L1_SPARSER * t["sp_last"].double()
            t["eta"] = torch.where(sparser, torch.full_like(t["eta"], L1_INITIAL_STEP * eps),
                                   t["eta"] / L1_STEP_DECAY).clamp(L1_MIN_STEP * L1_INITIAL_STEP * eps,
                                                                 L1_INITIAL_STEP * eps)
            t["topk"] = torch.ceil(sp.double() / L1_K_FROM_SPARSITY).long().clamp(1, d)
            t["sp_last"] = sp
            if bool(sparser.any()):
                sv = per_sample(sparser, x_next)
                t["x_k"] = torch.where(sv, t["x_best"], t["x_k"])
                t["g_k"] = torch.where(sv, t["g_best"], t["g_k"])
                t["f_k"] = torch.where(sparser, t["f_best"], t["f_k"])
        elif w in wset:
            # Condition 1: fewer than ρ·(w_j − w_{j−1}) of the steps since the last checkpoint
            # increased f. Condition 2: η unchanged (not halved at the last checkpoint) and f_max
            # not improved since it.
            cond1 = t["n_inc"].to(f_next.dtype) < rho * (w - prev_w[w])
            cond2 = ~t["reduced"] & (t["f_best"] <= t["f_best_last"])
            halve = cond1 | cond2
            if bool(halve.any()):
                hv = per_sample(halve, x_next)
                t["eta"] = torch.where(halve, t["eta"] / 2, t["eta"])
                t["x_k"] = torch.where(hv, t["x_best"], t["x_k"])
                t["g_k"] = torch.where(hv, t["g_best"], t["g_k"])
                t["f_k"] = torch.where(halve, t["f_best"], t["f_k"])
            t["reduced"] = halve
            t["f_best_last"] = t["f_best"].clone()
            t["n_inc"] = torch.zeros_like(t["n_inc"])
    out.charge(t["idx"], **spent)
    # points that never succeeded: keep the highest-objective point over all runs
    rest = ~t["found"]
    ii = t["idx"][rest]
    better = t["f_best"][rest] > state.objective[ii]
    if bool(better.any()):
        sel = rest.nonzero().squeeze(1)[better]
        out.record(t["idx"][sel], t["x_best"][sel], t["z_best"][sel],
                   torch.zeros(sel.numel(), dtype=torch.bool, device=x.device))
        state.objective[t["idx"][sel]] = t["f_best"][sel]


def _validate(config: Any) -> None:
    check_gradient_config(config)
    canonical_norm(config.norm)  # linf, l2 and l1 (L1-APGD) are all supported
    check_int("restarts", config.restarts)
    check_int("eot_iter", config.eot_iter)
    check_number("rho (the paper uses 0.75)", config.rho, high=1.0, high_open=True)


def _clean_logits(model: nn.Module, x: Tensor, eot_iter: int) -> tuple[Tensor, int]:
    """The clean logits, averaged over ``eot_iter`` passes for a randomised model."""
    total = None
    for _ in range(eot_iter):
        z = model(x).detach()
        total = z if total is None else total + z
    assert total is not None
    return (total / eot_iter if eot_iter > 1 else total), eot_iter


@dataclass(frozen=True, kw_only=True)
class _AutoPGD(Attack):
    """The settings and the clean pass APGD and APGD-T share (see :class:`APGD`)."""

    eps: float
    norm: Norm = "linf"
    steps: int = 100
    loss: str | LossFn = "ce"
    restarts: int = 1
    rho: float = 0.75
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories
    early_stop: bool = False
    eot_iter: int = 1

    def __post_init__(self) -> None:
        _validate(self)

    def _clean_scores(self, run: Run, x: Tensor) -> tuple[Tensor, int]:
        return _clean_logits(run.model, x, self.eot_iter)


@dataclass(frozen=True, kw_only=True)
class APGD(_AutoPGD):
    """Auto-PGD (Croce & Hein, ICML 2020, Algorithm 1) under L∞ or L2, and L1-APGD (Croce & Hein,
    ICML 2021) under L1; APGD-CE and APGD-DLR.

    ``x⁽ᵏ⁺¹⁾ = Π(x⁽ᵏ⁾ + α(z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))``, ``z⁽ᵏ⁺¹⁾ = Π(x⁽ᵏ⁾ + η·dir_p(∇f))``,
    ``α = 0.75``, ``η`` starting at ``2ε`` and halved (with a restart from the best point) at the
    checkpoints where progress stalls (see the module docstring and :func:`checkpoints`). Under L1
    the step is sparse (the top ``k`` coordinates by ``|g|``, ``k`` adapted to the sparsity of the
    best point), ``η⁽⁰⁾ = ε``, no momentum, and ``Π`` is the exact projection onto L1-ball ∩ box
    (module docstring).

    Every run starts from a uniformly random point of the ball; ``restarts`` re-runs on the points
    still robust. Per point the result is the first successful iterate, else the highest-objective
    point. Points the model already misclassifies (or, targeted, already assigns to ``target``)
    are returned unchanged and cost one forward pass. With ``target`` given the attack is targeted
    (``loss="ce"``: descend ``CE(z, t)``; ``loss="dlr"``: targeted DLR) and succeeds on
    ``pred == target``.

    Args:
        eps: radius of the ball; norm: ``"linf"``, ``"l2"`` or ``"l1"``; steps: iterations ``N`` (gradient
            evaluations per run; the last iterate costs one extra forward pass).
        loss: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR, invariant to shifting and scaling the
            logits), ``"cw"`` or a callable (see :mod:`advlab.losses`).
        restarts: runs from fresh random points on the points still robust.
        rho: condition 1's threshold ρ ∈ (0, 1) (paper: 0.75; not used under L1).
        early_stop: stop attacking a point at its first success (same points returned, fewer
            gradient passes); otherwise every point runs all ``steps``.
        eot_iter: gradients (and objectives, logits) averaged over this many passes, for
            randomised models (expectation over transformation).

    Example:
        >>> result = APGD(eps=8 / 255, loss="dlr", steps=100)(model, x, y)
        >>> robust_acc = 1 - result.success.float().mean()
        >>> sparse = APGD(eps=12.0, norm="l1", steps=100)(model, x, y)  # L1-APGD
    """

    def _core(self, run: Run) -> None:
        state, x, y, target, threat = run.record, run.x, run.y, run.target, run.threat
        loss = get_loss(self.loss)
        for restart in range(self.restarts):
            todo = (~state.success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            xs, ts = x[todo], target[todo] if target is not None else None
            _apgd_run(run.model, xs, y[todo], loss_target=ts, points=todo, decide=run.adversarial,
                      x_init=_random_start(threat, xs, run.generator), threat=threat,
                      loss=loss, steps=self.steps, rho=self.rho, eot_iter=self.eot_iter,
                      early_stop=self.early_stop, state=state, idx=todo,
                      warn_zero_grad=restart == 0)


@dataclass(frozen=True, kw_only=True)
class APGDT(_AutoPGD):
    """APGD-T, targeted Auto-PGD (Croce & Hein, ICML 2020, Sec. 4): an *untargeted* attack that runs
    APGD with the targeted DLR loss ``−(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2)`` against each of the
    ``n_target_classes`` classes with the highest clean logits (``y`` excluded), in turn, on the
    points still robust. Succeeds on any misclassification.

    Same update as :class:`APGD` (``η⁽⁰⁾ = 2ε``, momentum 0.75, checkpoint halving; under L1 the
    L1-APGD step and schedule, as AutoAttack's L1 version runs APGD-T). Budget:
    ``n_target_classes × restarts × steps`` gradient passes per robust point. Points never broken
    get the highest-objective point over all targets. ``n_target_classes`` is capped at ``C − 1``.
    The targeted DLR loss needs at least 4 classes: on a model with 2 or 3 (a binary table, say)
    the default ``loss="dlr"`` runs the targeted margin ``z_t − max_{j≠t} z_j`` instead (DLR-T
    without its scale normaliser, which needs the 3rd and 4th logits), with a warning; AutoAttack
    itself fails there (fra31/auto-attack#70). A callable or ``"ce"``/``"cw"`` is used as given.

    When fewer points remain robust than ``max_batch`` (default: the input batch size ``B``), the
    next target classes run together as rows ``(point, target)``, at most ``max_batch`` of them
    (a full batch runs faster per row, on a CPU and more so on a GPU): the same points
    are broken as one target at a time would break them (any target suffices); only the order of
    the random starts differs, and a point broken by one target of a group still finishes the
    others' runs (with ``early_stop``, they stop at their own first success).

    Example:
        >>> result = APGDT(eps=8 / 255, steps=100, n_target_classes=9)(model, x, y)
        >>> result.success  # misclassified, into whichever class
    """

    loss: str | LossFn = "dlr"
    n_target_classes: int = 9
    max_batch: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_target_classes", self.n_target_classes)
        if self.max_batch is not None:
            check_int("max_batch", self.max_batch)

    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        if target is not None:
            raise ValueError("APGDT picks its own target classes (the top-k by clean logits); for a "
                             "given target use APGD(loss='dlr' or 'ce')(model, x, y, target=target)")
    def _loss_for(self, num_classes: int) -> LossFn:
        """The loss to run on a model with ``num_classes`` outputs (DLR-T falls back to the
        targeted margin below 4 classes, with a warning)."""
        if isinstance(self.loss, str) and self.loss.lower() == "dlr" and num_classes < 4:
            warn(f"APGD-T: the targeted DLR loss needs at least 4 classes and the model has "
                 f"{num_classes}; running the targeted margin loss (z_t - max_(j != t) z_j) instead")
            return get_loss("cw")
        return get_loss(self.loss)

    def _check_clean(self, run: Run, logits: Tensor) -> None:
        if logits.shape[1] < 2:
            raise ValueError(f"APGD-T needs a model with at least 2 classes; it returns {logits.shape[1]} "
                             "score(s) per input")
        other = (run.y[:1] + 1) % logits.shape[1]
        self._loss_for(logits.shape[1])(logits[:1], run.y[:1], other)  # fail early on a bad loss

    def _core(self, run: Run) -> None:
        state, x, y, threat = run.record, run.x, run.y, run.threat
        # the clean logits rank the target classes
        logits = run.extras["clean_logits"]
        num_classes = logits.shape[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # _check_clean has warned already
            loss = self._loss_for(num_classes)
        k = min(self.n_target_classes, num_classes - 1)
        ranked = logits.scatter(1, y[:, None], float("-inf"))
        order = ranked.sort(dim=1, descending=True, stable=True).indices  # (B, C), y last
        # Targets in turn, several at once while few points are left: up to max_batch rows
        # (point, target). A point is broken if any of its targets breaks it, as when they
        # run one by one; only the order of random draws differs, and rows of a point broken
        # by an earlier target of the same group are spent anyway.
        j, first = 0, True
        while j < k:
            todo = (~state.success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            rows_max = self.max_batch if self.max_batch is not None else x.shape[0]
            group = max(1, min(k - j, rows_max // todo.numel()))
            points = todo.repeat(group)  # (group · P,) target-major
            targets = order[todo, j:j + group].t().reshape(-1)
            for _ in range(self.restarts):
                left = ~state.success[points]
                pts, tgs = points[left], targets[left]
                if pts.numel() == 0:
                    break
                xs = x[pts]
                rows = Record.empty(xs)
                _apgd_run(run.model, xs, y[pts], loss_target=tgs, points=pts, decide=run.adversarial,
                          x_init=_random_start(threat, xs, run.generator), threat=threat,
                          loss=loss, steps=self.steps, rho=self.rho, eot_iter=self.eot_iter,
                          early_stop=self.early_stop, state=rows,
                          idx=torch.arange(pts.numel(), device=x.device), warn_zero_grad=first)
                state.merge_rows(rows, pts)
                first = False
            j += group
