"""The attack contract: what an attack declares, and the one lifecycle every attack goes through.

An attack is a frozen dataclass that subclasses :class:`Attack`. It declares, at class level,

* ``access``: ``"gradients"`` (a white-box ``nn.Module``), ``"scores"`` or ``"labels"`` (an
  :class:`advlab.oracle.Oracle` answering scores or labels only);
* ``kind``: ``"bounded"`` (works within an ε-ball), ``"minimal"`` (looks for the smallest
  perturbation; no ε) or ``"universal"`` (one perturbation for many inputs);

and writes only its *core*: ``_core(run)``, the search on the points still to attack. Everything
else is :func:`execute`, the same for every attack:

1. validate the model (or wrap it in an oracle), the inputs, labels, targets and generator;
2. resolve the generator (a fresh one seeded with 0 when none is given: the global RNG is never
   touched) and the success criterion (:mod:`advlab.attacks.criteria`);
3. put the model in eval mode (warning if it was training) and restore every submodule's mode
   afterwards;
4. the clean pass (attacks that inspect the clean logits on their first step skip it): points
   that already meet the criterion are done and cost one forward pass;
5. the family's core on the others, writing into a :class:`Record`;
6. re-check every returned point: finite, inside the threat model (ball and box, in the dtype it
   is returned in), and its success *recomputed from the criterion* on the model's answer there;
7. build the :class:`~advlab.attacks.AttackResult`.

>>> result = PGD(eps=0.1)(model, x, y)                         # Attack.__call__ -> execute
>>> x_adv = perturb(PGD(eps=0.1, steps=7), model, x, y)      # the same points, no scoring pass
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Union

import torch
from torch import Tensor, nn

from advlab._checks import as_labels, check_inputs, check_logits, check_model, eval_mode, shape_error, warn
from advlab.attacks._base import AttackResult, config_repr
from advlab.attacks.criteria import Criterion, resolve
from advlab.threat import ThreatModel

Access = Literal["gradients", "scores", "labels"]
Kind = Literal["bounded", "minimal", "universal"]
ACCESS: tuple[str, ...] = ("gradients", "scores", "labels")
KINDS: tuple[str, ...] = ("bounded", "minimal", "universal")


@dataclass
class Record:
    """Per-point outputs of an attack, written in place as points finish.

    ``scores`` holds the model's answer (logits, or an oracle's scores) at ``x_adv`` for the
    points scored so far; ``pred == -1`` marks a point not scored yet (the lifecycle scores it
    with one forward pass). ``success`` is the core's own running view, used to decide which
    points to attack again; the result's ``success`` is recomputed from the criterion.
    ``objective`` is free for a family's "best point so far" bookkeeping (APGD).
    """

    x_adv: Tensor  # (B, *)
    success: Tensor  # (B,) bool
    pred: Tensor  # (B,) int64, -1 until scored
    num_grads: Tensor  # (B,) int64
    num_forwards: Tensor  # (B,) int64
    objective: Tensor  # (B,) -inf until set
    scores: Tensor | None = None  # (B, C), allocated on the first scored point

    @classmethod
    def empty(cls, x: Tensor) -> "Record":
        b, dev = x.shape[0], x.device
        long = dict(dtype=torch.long, device=dev)
        return cls(x_adv=x.detach().clone(), success=torch.zeros(b, dtype=torch.bool, device=dev),
                   pred=torch.full((b,), -1, **long), num_grads=torch.zeros(b, **long),
                   num_forwards=torch.zeros(b, **long),
                   objective=torch.full((b,), -math.inf, dtype=x.dtype, device=dev))

    def charge(self, idx: Tensor, *, grads: int | Tensor = 0, forwards: int | Tensor = 0) -> None:
        """Add passes spent on the points ``idx``."""
        self.num_grads[idx] += grads
        self.num_forwards[idx] += forwards

    def record(self, idx: Tensor, x_adv: Tensor, scores: Tensor | None, success: Tensor, *,
               grads: int = 0, forwards: int = 0) -> None:
        """Store the points ``idx`` with the model's answer there (``None``: not scored) and the
        core's success flags, and charge the passes they took."""
        self.charge(idx, grads=grads, forwards=forwards)
        self.x_adv[idx] = x_adv.detach()
        self.success[idx] = success
        if scores is None:
            self.pred[idx] = -1
            return
        scores = scores.detach()
        if self.scores is None:
            self.scores = torch.zeros(self.x_adv.shape[0], scores.shape[1], dtype=scores.dtype,
                                      device=scores.device)
        self.scores[idx] = scores.to(self.scores.dtype)
        self.pred[idx] = scores.argmax(dim=1)

    def set_labels(self, idx: Tensor, labels: Tensor) -> None:
        """Predictions known without scores (a label-only oracle's answers)."""
        self.pred[idx] = labels

    def merge_rows(self, rows: "Record", points: Tensor) -> None:
        """Fold a run over rows ``(point, variant)`` (``points[r]`` is row r's point) into this
        per-point record: each point takes its first successful row (rows in order), else its
        highest-``objective`` row if that beats what it has; passes are summed."""
        self.num_grads.index_add_(0, points, rows.num_grads)
        self.num_forwards.index_add_(0, points, rows.num_forwards)
        b, r = self.success.shape[0], torch.arange(points.numel(), device=points.device)
        none = points.numel()
        first = torch.full((b,), none, dtype=torch.long, device=points.device)
        first.scatter_reduce_(0, points[rows.success], r[rows.success], reduce="amin")
        best = torch.full((b,), -math.inf, dtype=rows.objective.dtype, device=points.device)
        best.scatter_reduce_(0, points, rows.objective, reduce="amax")
        at_best = (rows.objective == best[points]) & (rows.objective > self.objective[points]) & ~rows.success
        pick = torch.full((b,), none, dtype=torch.long, device=points.device)
        pick.scatter_reduce_(0, points[at_best], r[at_best], reduce="amin")
        pick = torch.where(first < none, first, pick)
        chosen = (pick < none).nonzero().squeeze(1)
        src = pick[chosen]
        scores = rows.scores[src] if rows.scores is not None else None
        self.record(chosen, rows.x_adv[src], scores, rows.success[src])
        if scores is None:
            self.pred[chosen] = rows.pred[src]
        self.objective[chosen] = torch.where(rows.success[src], self.objective[chosen], rows.objective[src])


@dataclass
class Run:
    """One attack call as its core sees it: the validated inputs and where results go.

    ``target`` is the class the objective aims at (the call's target, or the criterion's, e.g.
    :class:`~advlab.attacks.criteria.SourceTarget`); ``todo`` the points still to attack after the
    clean pass; ``score=False`` (from :func:`perturb`) lets a fixed-budget core skip the forward
    pass on its last iterate.
    """

    attack: "Attack"
    model: Any  # nn.Module (access "gradients") or Oracle
    x: Tensor
    y: Tensor
    target: Tensor | None
    generator: torch.Generator
    threat: ThreatModel
    criterion: Criterion
    record: Record
    todo: Tensor
    score: bool = True
    session: Any = None  # the oracle's QuerySession (black-box access)
    probabilities: bool = False  # answers are probabilities, not logits
    extras: dict[str, Any] = field(default_factory=dict)
    on_step: Callable[[Any], None] | None = None  # the gradient loop's per-step hook (see trace)

    def adversarial(self, scores: Tensor, idx: Tensor) -> Tensor:
        """``(k,)`` bool: the criterion on answers ``scores`` ``(k, C)`` of the points ``idx``."""
        probs = scores if self.probabilities else torch.softmax(scores.detach(), dim=1)
        tgt = self.target[idx] if self.target is not None else None
        return self.criterion(scores.argmax(dim=1), probs, self.y[idx], tgt)

    def adversarial_labels(self, labels: Tensor, idx: Tensor) -> Tensor:
        """``(k,)`` bool: the criterion on label-only answers of the points ``idx``."""
        tgt = self.target[idx] if self.target is not None else None
        return self.criterion(labels, None, self.y[idx], tgt)


def feature_fields(config: Any) -> dict[str, Any]:
    """The per-feature fields of an attack configuration (``mask``, ``categorical``), as
    :class:`~advlab.threat.ThreatModel` keywords."""
    return {"mask": getattr(config, "mask", None), "categorical": getattr(config, "categorical", None)}


class Attack:
    """Base of every attack configuration (one level: attacks are flat frozen dataclasses).

    Every attack in the registry takes the same per-feature options as its threat model
    (:class:`~advlab.threat.ThreatModel`): ``bounds`` as two numbers or as per-feature tensors
    shaped like one input; ``mask`` (bool, shaped like one input: ``True`` where the attack may
    change a feature; the others come back equal to ``x`` exactly, and the search spends nothing
    on them); ``categorical`` (feature indices or a bool mask), which every attack refuses unless
    the mask freezes those features, since all of them change features by numeric steps.

    Class-level metadata read by the registry, the CLI, evaluations and the contract tests:
    ``access`` (what the attack may see), ``kind`` (bounded, minimal, universal), ``clean_pass``
    (the lifecycle classifies the clean points first; gradient-loop attacks check them on their
    first step instead, so a k-step attack costs exactly k passes) and ``loss_fusion`` (whether
    the attack honours an :class:`advlab.models.Ensemble` fused in loss; ``False`` refuses one).
    ``radius`` names the field that is the ball's radius (``eps``; SimBA's ``max_norm``).

    One ``early_stop`` rule for every attack that has the option: a point stops at its first
    iterate (or query) that meets the criterion, and that point is returned. It defaults to
    ``False`` where the configuration is a fixed gradient budget (PGD, I-FGSM, MI-FGSM, APGD:
    bit-identical to the peers' loops) and to ``True`` for query attacks, whose budget is a
    ceiling (Square, as its paper; SimBA and NES always stop); every evaluation turns it on.
    """

    access: ClassVar[Access] = "gradients"
    kind: ClassVar[Kind] = "bounded"
    clean_pass: ClassVar[bool] = True
    loss_fusion: ClassVar[bool] = True
    #: a name for tables (``"PGD"``); the class name by default
    display_name: ClassVar[str | None] = None
    #: the field that is the radius of the attack's ball: what an evaluation at ε sets (see
    #: :func:`at_radius`); ``"eps"`` for every attack but SimBA, whose ``eps`` is its step
    radius: ClassVar[str] = "eps"

    def threat_model(self, *, targeted: bool = False) -> ThreatModel:
        """The threat model of a call (``eps = inf`` for minimal attacks)."""
        eps = getattr(self, self.radius, math.inf)
        return ThreatModel(norm=getattr(self, "norm", "l2"), eps=math.inf if eps is None else eps,
                           bounds=getattr(self, "bounds", (0.0, 1.0)), targeted=targeted,
                           **feature_fields(self))

    def __call__(self, model: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None,
                 criterion: Criterion | None = None) -> AttackResult:
        return execute(self, model, x, y, target=target, generator=generator, criterion=criterion)

    def _core(self, run: Run) -> None:  # pragma: no cover - every attack overrides it
        raise NotImplementedError

    def _clean_scores(self, run: Run, x: Tensor) -> tuple[Tensor, int]:
        """The clean pass: the model's logits on ``x`` and the forward passes it cost."""
        return run.model(x), 1

    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        """Family-specific refusals (e.g. an untargeted-only attack given a target)."""

    def _criterion(self, model: Any, target: Tensor | None, criterion: Criterion | None) -> Criterion:
        """The call's criterion (the default: misclassified, or the target hit)."""
        return resolve(criterion, target)

    def _check_clean(self, run: Run, logits: Tensor) -> None:
        """Family-specific checks of the clean logits (e.g. a loss that needs 4 classes); runs
        even when every point is already adversarial, so misuse fails the same way on any data."""

    def __repr__(self) -> str:
        return config_repr(self)


#: what evaluations accept: an advlab attack, or any callable ``attack(model, x, y, *, generator)``
#: returning an :class:`AttackResult` (whose successes are then re-checked)
AttackLike = Union[Attack, Callable[..., AttackResult]]


def is_attack(obj: object) -> bool:
    return isinstance(obj, Attack)


def _check_fusion(attack: Attack, model: nn.Module) -> None:
    from advlab.models.ensemble import Ensemble  # local: models must not import attacks

    if not attack.loss_fusion:
        for m in model.modules():
            if isinstance(m, Ensemble) and m.fusion == "loss":
                raise ValueError(f"{type(attack).__name__} works on the model's logits, and an Ensemble "
                                 "fused in loss has no logits of its own to attack (its objective is a "
                                 "weighted sum of its members' losses); use Ensemble(..., "
                                 "fusion='logits') or 'predictions', or a loss-based attack (PGD, "
                                 "MI-FGSM, C&W, FMN)")


def _check_differentiable(attack: Attack, model: nn.Module) -> None:
    """A model that answers but has no gradient (a decision tree, a forest, a k-NN wrapped by
    :func:`advlab.models.as_model`) is refused by gradient attacks, naming what works on it."""
    if getattr(attack, "structural", False):
        return
    for m in model.modules():
        if getattr(m, "differentiable", True) is False:
            what = type(getattr(m, "estimator", m)).__name__
            tree = "TreeAttack (the tree's own white-box attack), " if "Tree" in what else ""
            knn = "a gradient attack on advlab.models.SoftKNN (its differentiable surrogate), " \
                if "KNeighbors" in what else ""
            raise ValueError(f"{type(attack).__name__} needs gradients, and the model ({what}) has none; "
                             f"use {tree}{knn}a decision-based attack through advlab.oracle.Oracle "
                             "(HopSkipJump, BoundaryAttack) or a transfer attack from a differentiable "
                             "surrogate")


def _open(attack: Attack, model: Any, x: Tensor, y: Tensor, target: Tensor | None,
          generator: torch.Generator | None, criterion: Criterion | None, score: bool) -> Run:
    """Steps 1-2 of the lifecycle: validate and resolve."""
    if not isinstance(attack, Attack):
        raise TypeError(f"expected an advlab attack, got {type(attack).__name__}")
    session, probs = None, False
    if attack.access == "gradients":
        check_model(model)
        _check_differentiable(attack, model)
        _check_fusion(attack, model)
        checked_model = model
    else:
        from advlab.oracle import as_oracle

        model = as_oracle(model)
        checked_model = None
        if attack.access == "scores" and model.output != "scores":
            raise ValueError(f"{type(attack).__name__} is a score-based attack: it needs Oracle(..., "
                             "output='scores'); with a label-only oracle use a decision-based attack "
                             "(HopSkipJump, BoundaryAttack)")
    threat = attack.threat_model(targeted=target is not None)
    check_inputs(checked_model, x, y, bounds=threat.bounds, target=target, generator=generator)
    threat.check_features(x, who=type(attack).__name__)
    y, target = as_labels(y), as_labels(target)  # any integer dtype; torch's losses want int64
    attack._check_call(model, x, y, target)
    crit = attack._criterion(model, target, criterion)
    if crit.requires_scores() and (attack.access == "labels" or getattr(model, "output", "scores") == "label"):
        raise ValueError(f"{crit!r} reads probabilities, but {type(attack).__name__} sees labels only")
    aim = crit.resolve_target(y, target)
    if aim is not None and target is None:
        threat = attack.threat_model(targeted=True)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    x = x.detach()
    if attack.access != "gradients":
        session = model.session(int(x.shape[0]))
        probs = True  # refined by the core from the first answers (logits or probabilities)
    return Run(attack=attack, model=model, x=x, y=y, target=aim, generator=generator, threat=threat,
               criterion=crit, record=Record.empty(x), todo=torch.arange(x.shape[0], device=x.device),
               score=score, session=session, probabilities=probs)


def _clean(run: Run) -> None:
    """Step 4: classify the clean points; those already adversarial are done."""
    x, idx = run.x, run.todo
    with torch.no_grad():
        try:
            logits, forwards = run.attack._clean_scores(run, x)
        except (RuntimeError, IndexError) as err:
            raise shape_error(x, err) from err
    check_logits(logits, run.y, run.target)
    run.attack._check_clean(run, logits)
    run.extras["clean_logits"] = logits
    run.record.charge(idx, forwards=forwards)
    hit = run.adversarial(logits, idx)
    if bool(hit.any()):
        run.record.record(idx[hit], x[hit], logits[hit], hit[hit])
    run.todo = idx[~hit]


def _score_missing(run: Run) -> None:
    """Step 6a: one forward pass on the returned points the core did not score."""
    rec = run.record
    missing = (rec.pred < 0).nonzero().squeeze(1)
    if missing.numel() == 0 or run.attack.access != "gradients":
        return
    with torch.no_grad():
        logits = run.model(rec.x_adv[missing])
    rec.record(missing, rec.x_adv[missing], logits, rec.success[missing], forwards=1)


def _close(run: Run) -> AttackResult:
    """Steps 6-7: re-check every point and build the result."""
    rec, x, threat = run.record, run.x, run.threat
    norms, inside = threat.measure(rec.x_adv, x)
    # x is finite (checked on entry), so a NaN/Inf in x_adv shows in its norm: one (B,) test
    if not bool(torch.isfinite(norms).all()):
        raise FloatingPointError("the attack produced NaN/Inf inputs: the model's gradient is NaN or "
                                 "Inf on some points; check the model for non-finite operations")
    if not bool(inside.all()):
        raise AssertionError(f"internal error: {type(run.attack).__name__} returned "
                             f"{int((~inside).sum())} points outside its threat model; please report this")
    b = x.shape[0]
    if rec.scores is not None:
        probs = rec.scores if run.probabilities else torch.softmax(rec.scores, dim=1)
        scored = rec.pred >= 0
        finite = torch.isfinite(rec.scores).all(dim=1)
        confidence = probs.gather(1, rec.pred.clamp_min(0)[:, None]).squeeze(1).to(x.dtype)
        success = run.criterion(rec.pred, probs, run.y, run.target) & scored & finite
        if not bool(finite[scored].all()):
            warn(f"the model returned NaN/Inf at {int((~finite & scored).sum())} adversarial points; "
                 "they are not counted as successes (check the model for non-finite operations)")
    else:
        confidence = torch.full((b,), math.nan, dtype=x.dtype, device=x.device)
        success = run.criterion(rec.pred, None, run.y, run.target) & (rec.pred >= 0)
    queries = exhausted = None
    if run.session is not None:
        queries = run.session.queries.to(x.device)
        stopped = run.extras.get("exhausted")
        exhausted = (run.session.exhausted() if stopped is None else stopped).to(x.device) & ~success
        num_forwards = queries.clone()
    else:
        num_forwards = rec.num_forwards
    return AttackResult(x_adv=rec.x_adv, success=success, pred=rec.pred, confidence=confidence,
                        norms=norms, num_grads=rec.num_grads,
                        num_forwards=num_forwards, threat=threat, attack=config_repr(run.attack),
                        target=run.target.detach().clone() if run.target is not None else None,
                        queries=queries, budget_exhausted=exhausted)


def _drive(attack: Attack, model: Any, x: Tensor, y: Tensor, *, target: Tensor | None,
           generator: torch.Generator | None, criterion: Criterion | None, score: bool,
           on_step: Callable[[Any], None] | None = None,
           extras: dict[str, Any] | None = None) -> Run:
    if attack.access == "gradients" and torch.is_inference_mode_enabled():
        return needs_autograd(_drive)(attack, model, x, y, target=target, generator=generator,
                                      criterion=criterion, score=score, on_step=on_step, extras=extras)
    run = _open(attack, model, x, y, target, generator, criterion, score)
    run.on_step = on_step
    run.extras.update(extras or {})
    if attack.access == "gradients":
        with eval_mode(model), torch.enable_grad():
            if attack.clean_pass:
                _clean(run)
            if run.todo.numel():
                attack._core(run)
            if score:
                with torch.no_grad():
                    _score_missing(run)
    else:
        attack._core(run)
    return run


def needs_autograd(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` outside ``torch.inference_mode()``, where no gradient can be taken and a
    gradient attack would silently return its starting points; tensor arguments made inside it
    are copied out first. Outside inference mode this is a plain call."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_inference_mode_enabled():
            return fn(*args, **kwargs)
        with torch.inference_mode(False):
            out = lambda v: v.clone() if isinstance(v, Tensor) and v.is_inference() else v  # noqa: E731
            return fn(*map(out, args), **{k: out(v) for k, v in kwargs.items()})
    return wrapper


def radius_of(attack: Any) -> float | None:
    """The radius of ``attack``'s ball (its :attr:`Attack.radius` field; ``eps`` for a foreign
    configuration), ``None`` where it has none."""
    value = getattr(attack, getattr(type(attack), "radius", "eps"), None)
    return None if value is None else float(value)


def at_radius(attack: Any, eps: float) -> Any:
    """``attack`` with its ball's radius set to ``eps`` (``dataclasses.replace`` on its
    :attr:`Attack.radius` field), as ``evaluate`` and the audits re-run it at every ε."""
    return dataclasses.replace(attack, **{getattr(type(attack), "radius", "eps"): eps})


def execute(attack: Attack, model: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
            generator: torch.Generator | None = None, criterion: Criterion | None = None,
            extras: dict[str, Any] | None = None) -> AttackResult:
    """Run ``attack`` through the lifecycle (see the module docstring) and return its result.

    ``extras`` are per-call inputs of the core that are not hyperparameters (HopSkipJump's
    ``starting_points``, the points a transfer attack crafted); the core reads them from
    ``run.extras``.
    """
    return _close(_drive(attack, model, x, y, target=target, generator=generator, criterion=criterion,
                         score=True, extras=extras))


def trace(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, *, on_step: Callable[[Any], None],
          target: Tensor | None = None, generator: torch.Generator | None = None,
          criterion: Criterion | None = None) -> AttackResult:
    """Run a gradient-loop attack with ``on_step(info)`` called after every step of the shared
    loop (:class:`advlab.attacks._loop.StepInfo`: the step, the points, the iterate before and
    after, the gradient and the direction). The result is the attack's own, bit for bit."""
    return _close(_drive(attack, model, x, y, target=target, generator=generator, criterion=criterion,
                         score=True, on_step=on_step))


def perturb(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
            generator: torch.Generator | None = None) -> Tensor:
    """Only the adversarial inputs of an attack, ``(B, *)``, for adversarial training.

    The same points as ``attack(model, x, y, ...).x_adv`` (bit for bit), without the forward pass
    on the last iterate that fills ``success``/``pred``/``confidence``: a fixed-budget k-step
    gradient attack then costs exactly k forward+backward passes (for PGD-7 training that pass is
    ~8% of a training step). Attacks that need predictions to run (``early_stop``,
    ``restarts > 1``) score as usual.

    Example:
        >>> x_adv = perturb(PGD(eps=0.1, steps=7), model, x, y, generator=g)
    """
    run = _drive(attack, model, x, y, target=target, generator=generator, criterion=None, score=False)
    if not bool(torch.isfinite(run.record.x_adv).all()):
        raise FloatingPointError("the attack produced NaN/Inf inputs: the model's gradient is NaN or "
                                 "Inf on some points; check the model for non-finite operations")
    return run.record.x_adv


__all__ = ["ACCESS", "Access", "Attack", "AttackLike", "KINDS", "Kind", "Record", "Run", "at_radius", "execute",
           "feature_fields", "is_attack", "needs_autograd", "perturb", "radius_of", "trace"]
