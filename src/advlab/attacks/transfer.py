"""Black-box attacks by transfer: train a substitute from oracle labels, craft on it, ask once.

Two pieces (Papernot, McDaniel, Goodfellow, Jha, Celik & Swami, "Practical Black-Box Attacks
against Machine Learning", AsiaCCS 2017):

* :func:`train_substitute` learns a local model that imitates an :class:`~advlab.oracle.Oracle`
  from the oracle's *labels* only, growing its training set by Jacobian-based dataset
  augmentation (Algorithm 1 of the paper, with the periodic step size and reservoir sampling of
  its Section 6);
* :class:`TransferAttack` crafts adversarial examples with any white-box attack (FGSM, I-FGSM,
  MI-FGSM, PGD, ...) on a source model (a substitute, any local model, or an
  :class:`advlab.models.Ensemble` of surrogates, Dong et al. 2018) and asks the target oracle
  one query per point for its verdict.

Shapes: ``x`` ``(B, C, H, W)`` floats inside ``bounds``; ``y`` and ``target`` ``(B,)`` int64.

Example:
    >>> oracle = Oracle(target_model, output="label")
    >>> sub = train_substitute(oracle, seed_x, rounds=6, lambda_=0.1, holdout_x=x_val)
    >>> sub.queries, sub.agreement_per_round[-1]
    >>> res = TransferAttack(attack=MIFGSM(eps=0.1, steps=10), source=sub.model)(oracle, x, y)
    >>> res.success_rate, res.source.success_rate       # on the target; white-box on the source
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab._checks import check_int, check_number, eval_mode, input_grad
from advlab.attacks._base import AttackResult, config_repr
from advlab.attacks._blackbox import are_probabilities, check_label_range, labels_of
from advlab.attacks.contract import Attack, Run, execute
from advlab.attacks.criteria import Criterion
from advlab.models.training import fit
from advlab.models.zoo import ARCHITECTURES, build_seeded
from advlab.oracle import Oracle, QuerySession, as_oracle
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

__all__ = ["SubstituteResult", "TransferAttack", "TransferResult", "jacobian_augmentation",
           "train_substitute"]


# -- validation -----------------------------------------------------------------------------------


def _check_images(name: str, x: Any, bounds: tuple[float, float], *,
                  like: Tensor | None = None) -> Tensor:
    """``x`` must be a non-empty float ``(N, C, H, W)`` tensor, finite and inside ``bounds``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}; for uint8 images "
                        "use x.float() / 255")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}; for one image "
                         "use x.unsqueeze(0)")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: the substitute needs at least one input")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    lo, hi = bounds
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo or xmax > hi:
        raise ValueError(f"{name} has values in [{xmin:.4g}, {xmax:.4g}], outside the bounds "
                         f"({lo:g}, {hi:g}); rescale the inputs or pass bounds=(lo, hi)")
    if like is not None:
        if tuple(x.shape[1:]) != tuple(like.shape[1:]):
            raise ValueError(f"{name} has inputs of shape {tuple(x.shape[1:])} but seed_x has "
                             f"{tuple(like.shape[1:])}")
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but seed_x is on {like.device}")
    return x.detach()


# -- Jacobian-based dataset augmentation ----------------------------------------------------------


def jacobian_augmentation(model: nn.Module, x: Tensor, labels: Tensor, *, step: float,
                          bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256) -> Tensor:
    """New points ``clip(x + step · sign(∂F_ỹ(x)/∂x))`` (Papernot et al. 2017, eq. 4), ``(N, *)``.

    ``F_ỹ`` is the substitute's logit for the oracle's label ``ỹ = labels`` (as in the authors'
    CleverHans reference implementation, which differentiates the logits); ``step`` is the signed
    ``λ_ρ``. The gradient is taken with respect to the input only (no parameter ``.grad`` is
    written), in eval mode, ``batch_size`` rows at a time.
    """
    if not (isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)):
        raise ValueError(f"step must be a finite number (the signed λ), got {step!r}")
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (x.shape[0],):
        raise ValueError(f"labels must be a ({x.shape[0]},) tensor of class indices, one per row of x")
    check_int("batch_size", batch_size)
    out = torch.empty_like(x)
    with eval_mode(model), torch.enable_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].detach().clone().requires_grad_(True)  # (b, C, H, W)
            logits = model(xb)  # (b, K)
            chosen = logits.gather(1, labels[i:i + batch_size, None].to(logits.device)).sum()
            grad = input_grad(chosen, xb)
            out[i:i + batch_size] = (xb.detach() + step * grad.sign()).clamp(bounds[0], bounds[1])
    return out


@dataclass(frozen=True)
class SubstituteResult:
    """A substitute trained by :func:`train_substitute`, and what it cost.

    Attributes:
        model: the substitute after the last round, in eval mode.
        queries: oracle labels asked in total (each new point is asked exactly once).
        queries_per_round: labels asked before training round ``ρ`` (round 0: the seed set; round
            ``ρ > 0``: the points added by the augmentation after round ``ρ - 1``).
        dataset_sizes: ``|S_ρ|``, the number of labelled points round ``ρ`` trained on.
        agreement_per_round: fraction of ``holdout_x`` on which the substitute after round ``ρ``
            predicts the oracle's label (empty without ``holdout_x``).
        lambdas: the signed step ``λ_ρ`` used by the augmentation after round ``ρ``.
        x, y: the final labelled set ``S`` ``(N, *)`` and its oracle labels ``(N,)``.
        parents: ``(N,)`` int64, for each point of ``x`` the index of the point it was augmented
            from, ``-1`` for seed points.
        budget_exhausted: the oracle's budget cut the augmentation short.
        holdout_queries: labels asked (outside the budget, as evaluation) to measure agreement.
        round_models: with ``keep_round_models=True``, an eval-mode copy of the substitute after
            every round (the last one is ``model``); else empty.
        settings: the hyperparameters, for reports.
    """

    model: nn.Module
    queries: int
    queries_per_round: list[int]
    dataset_sizes: list[int]
    agreement_per_round: list[float]
    lambdas: list[float]
    x: Tensor
    y: Tensor
    parents: Tensor
    budget_exhausted: bool
    holdout_queries: int = 0
    round_models: list[nn.Module] = field(default_factory=list, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        """Training rounds completed."""
        return len(self.dataset_sizes)

    @property
    def cumulative_queries(self) -> list[int]:
        """Labels asked by the time round ``ρ`` trained (``== dataset_sizes``)."""
        total, out = 0, []
        for q in self.queries_per_round:
            total += q
            out.append(total)
        return out

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per round: round, queries so far, set size, λ, agreement (if measured)."""
        rows = []
        for r in range(self.rounds):
            row: dict[str, Any] = {"round": r, "queries": self.cumulative_queries[r],
                                   "dataset_size": self.dataset_sizes[r]}
            if r < len(self.lambdas):
                row["lambda"] = self.lambdas[r]
            if self.agreement_per_round:
                row["agreement"] = self.agreement_per_round[r]
            rows.append(row)
        return rows


def _ask(session: QuerySession, x: Tensor) -> Tensor:
    """Labels for the rows of ``x``, all charged to the session's single point."""
    index = torch.zeros(x.shape[0], dtype=torch.long)
    return labels_of(session(x, index)).to(x.device)


def _agreement(model: nn.Module, x: Tensor, labels: Tensor, batch_size: int) -> float:
    with eval_mode(model), torch.no_grad():
        pred = torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)])
    return float((pred == labels).float().mean())


def train_substitute(oracle: Oracle, seed_x: Tensor, *,
                     architecture: str | Callable[[], nn.Module] = "small-cnn",
                     rounds: int = 6, lambda_: float = 0.1, tau: int | None = None,
                     epochs: int = 10, lr: float = 1e-3, batch_size: int = 128,
                     from_scratch: bool = False, reservoir_size: int | None = None,
                     reservoir_start: int = 3, num_classes: int | None = None,
                     bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                     holdout_x: Tensor | None = None,
                     keep_round_models: bool = False, progress: bool = False) -> SubstituteResult:
    """Train a substitute of ``oracle`` from its labels (Papernot et al. 2017, Algorithm 1).

    For ``ρ = 0 .. rounds-1``: label the new points of ``S_ρ`` with the oracle
    (``ỹ = O(x)``: the answered label, or the argmax of answered scores); train the substitute
    ``F`` on ``(S_ρ, ỹ)``; then, unless it is the last round, augment

        ``S_{ρ+1} = S_ρ ∪ {clip(x + λ_ρ · sign(∂F_ỹ(x)/∂x)) : x ∈ S_ρ}``,  ``λ_ρ = λ · (−1)^⌊ρ/τ⌋``

    (``tau=None``: a constant ``λ``, Algorithm 1; an integer ``τ``: the periodic step size of
    Section 6). With ``reservoir_size=κ`` only ``κ`` points of ``S_ρ``, drawn uniformly without
    replacement, are augmented in the augmentations after round ``reservoir_start`` (σ), so the
    labels asked grow as ``n·2^σ + κ·(ρ−σ)`` instead of ``n·2^ρ`` (Section 6, "reservoir sampling").
    ``rounds`` counts training rounds, so there are ``rounds − 1`` augmentations, as in the
    authors' reference implementation; the seed set of ``n`` points then costs ``n·2^(rounds−1)``
    labels without a reservoir.

    Training continues from the previous round's weights (the reference implementation), or
    restarts from the same initialisation each round with ``from_scratch=True``. Each round runs
    :func:`advlab.models.fit` (Adam, cross-entropy) for ``epochs`` epochs.

    Query accounting: every point of ``S`` is labelled exactly once, when it is added. All labels
    are charged to one :class:`~advlab.oracle.QuerySession` point, so the oracle's per-point
    ``budget`` is the total number of labels the training may ask (``oracle.with_budget(B)``).
    When the next augmentation would go past it, only as many new points as the budget allows
    (drawn at random) are labelled and added, the substitute trains once more on them, and
    training stops with ``budget_exhausted=True``; a budget smaller than the seed set is an error.
    A new point equal to its parent (every coordinate's step clipped away) is not added.

    Args:
        oracle: the target, as an :class:`~advlab.oracle.Oracle` (``output="label"`` or ``"scores"``).
        seed_x: ``(n, C, H, W)`` the initial set ``S_0``, inside ``bounds`` (the paper: 150 test
            images, 10–15 per class).
        architecture: a zoo name (:data:`advlab.models.ARCHITECTURES`) or a zero-argument factory
            returning a fresh ``nn.Module`` that maps ``(B, C, H, W)`` to logits ``(B, K)``.
        rounds: training rounds ``≥ 1``.
        lambda_: the augmentation step ``λ > 0`` in input units.
        tau: period of the sign flip of ``λ``, or ``None`` for a constant sign.
        epochs, lr, batch_size: training per round.
        from_scratch: re-initialise the substitute before each round.
        reservoir_size, reservoir_start: the paper's ``κ`` and ``σ``; ``None`` doubles every round.
        num_classes: classes of the substitute; by default the oracle's (known once it has
            answered scores or a Module's logits), else the largest seed label + 1.
        bounds: the input box; :func:`advlab.models.fit` requires it inside ``[0, 1]``.
        seed: seeds the initialisation (zoo names), the shuffling and the reservoir draws.
        holdout_x: ``(m, C, H, W)`` points on which to measure agreement after every round. Their
            oracle labels are asked once, through a separate evaluation copy of the oracle
            without budget; they are reported as ``holdout_queries`` and never counted in
            ``queries`` nor used for training.
        keep_round_models: keep an eval-mode copy of the substitute after every round.
        progress: show a progress bar over the rounds.

    Returns:
        A :class:`SubstituteResult`. The oracle's model and the inputs are not modified; the
        global RNG is left as it was.
    """
    oracle = as_oracle(oracle)
    lo, hi = ThreatModel(norm="linf", eps=0.0, bounds=bounds).bounds
    if lo < 0 or hi > 1:
        raise ValueError(f"bounds must lie inside [0, 1] (advlab.models.fit trains on inputs in "
                         f"[0, 1]), got {bounds!r}; put any rescaling inside the model")
    bounds = (lo, hi)
    check_int("rounds", rounds)
    lambda_ = check_number("lambda_", lambda_)
    if tau is not None:
        check_int("tau", tau)
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    lr = check_number("lr", lr)
    if reservoir_size is not None:
        check_int("reservoir_size", reservoir_size)
    check_int("reservoir_start", reservoir_start, 0)
    if num_classes is not None:
        check_int("num_classes", num_classes, 2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not (isinstance(architecture, str) or callable(architecture)):
        raise TypeError("architecture must be a zoo name (e.g. 'small-cnn') or a zero-argument "
                        f"factory returning an nn.Module, got {type(architecture).__name__}")
    if isinstance(architecture, str) and architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; valid names: "
                         f"{', '.join(sorted(ARCHITECTURES))}, or pass a factory returning an nn.Module")
    seed_x = _check_images("seed_x", seed_x, bounds)
    if holdout_x is not None:
        holdout_x = _check_images("holdout_x", holdout_x, bounds, like=seed_x)
    n0 = int(seed_x.shape[0])
    if oracle.budget is not None and oracle.budget < n0:
        raise ValueError(f"the oracle's budget ({oracle.budget} labels) is smaller than the seed set "
                         f"({n0} points), which alone needs {n0} labels; raise the budget with "
                         "oracle.with_budget(...) or use fewer seed points")

    device = seed_x.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    session = oracle.session(1)

    # S_0: label the seed set
    x_set = seed_x.clone()
    y_set = _ask(session, x_set)
    parents = torch.full((n0,), -1, dtype=torch.long, device=device)
    queries_per_round = [n0]

    if num_classes is None:
        num_classes = oracle.num_classes
        if num_classes is None:
            num_classes = max(int(y_set.max()) + 1, 2)
            log.warning("the oracle answers labels only: the substitute gets %d classes (largest seed "
                        "label + 1); pass num_classes= if the oracle has more", num_classes)
    elif int(y_set.max()) >= num_classes:
        raise ValueError(f"the oracle answered class {int(y_set.max())} but num_classes={num_classes}")

    in_shape = tuple(int(d) for d in seed_x.shape[1:])

    def make_model() -> nn.Module:
        if isinstance(architecture, str):
            return build_seeded(architecture, in_shape=in_shape, num_classes=num_classes, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = architecture()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the architecture factory returned {type(model).__name__}, not an nn.Module")
        return model

    model = make_model().to(device)
    init_state = copy.deepcopy(model.state_dict()) if from_scratch else None

    holdout_labels: Tensor | None = None
    holdout_queries = 0
    if holdout_x is not None:
        evaluation = oracle.with_budget(None).session(1)
        holdout_labels = _ask(evaluation, holdout_x)
        holdout_queries = int(holdout_x.shape[0])

    dataset_sizes: list[int] = []
    agreement: list[float] = []
    lambdas: list[float] = []
    round_models: list[nn.Module] = []
    exhausted = False
    bar = tqdm(range(rounds), desc="substitute", unit="round", disable=not progress, leave=False)
    for rho in bar:
        if from_scratch and rho > 0:
            model.load_state_dict(init_state)  # type: ignore[arg-type]
        fit(model, x_set, y_set, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed + rho,
            progress=False)
        model.eval()
        dataset_sizes.append(int(x_set.shape[0]))
        if holdout_labels is not None:
            agreement.append(_agreement(model, holdout_x, holdout_labels, 512))  # type: ignore[arg-type]
        if keep_round_models:
            round_models.append(copy.deepcopy(model).eval())
        bar.set_postfix(queries=sum(queries_per_round), **({"agreement": f"{agreement[-1]:.3f}"}
                                                           if agreement else {}))
        log.info("substitute round %d: %d labelled points, %d queries%s", rho, x_set.shape[0],
                 sum(queries_per_round), f", agreement {agreement[-1]:.4f}" if agreement else "")
        if rho == rounds - 1 or exhausted:
            break

        # Jacobian-based augmentation of S_ρ (or of a reservoir of κ of its points)
        step = lambda_ * (-1.0) ** (rho // tau) if tau is not None else lambda_
        lambdas.append(step)
        src = torch.arange(x_set.shape[0], device=device)
        if reservoir_size is not None and rho >= reservoir_start and reservoir_size < src.numel():
            src = src[torch.randperm(src.numel(), generator=gen)[:reservoir_size].to(device)].sort().values
        new_x = jacobian_augmentation(model, x_set[src], y_set[src], step=step, bounds=bounds,
                                      batch_size=max(batch_size, 256))
        moved = (new_x != x_set[src]).flatten(1).any(dim=1)
        new_x, src = new_x[moved], src[moved]
        remaining = int(session.remaining[0])
        if new_x.shape[0] > remaining:
            exhausted = True
            keep = torch.randperm(new_x.shape[0], generator=gen)[:remaining].sort().values.to(device)
            new_x, src = new_x[keep], src[keep]
            log.info("the oracle's budget allows %d of the %d new points; augmentation stops",
                     remaining, int(moved.sum()))
        if new_x.shape[0] == 0:
            break
        new_y = _ask(session, new_x)
        x_set = torch.cat([x_set, new_x])
        y_set = torch.cat([y_set, new_y])
        parents = torch.cat([parents, src])
        queries_per_round.append(int(new_x.shape[0]))

    bar.close()
    model.eval()
    queries = int(session.queries[0])
    assert queries == sum(queries_per_round) == x_set.shape[0]
    settings = {"architecture": architecture if isinstance(architecture, str) else repr(architecture),
                "rounds": rounds, "lambda": lambda_, "tau": tau, "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "from_scratch": from_scratch,
                "reservoir_size": reservoir_size, "reservoir_start": reservoir_start,
                "num_classes": num_classes, "bounds": bounds, "seed": seed, "seed_size": n0,
                "oracle": repr(oracle)}
    return SubstituteResult(model=model, queries=queries, queries_per_round=queries_per_round,
                            dataset_sizes=dataset_sizes, agreement_per_round=agreement,
                            lambdas=lambdas, x=x_set, y=y_set, parents=parents,
                            budget_exhausted=exhausted, holdout_queries=holdout_queries,
                            round_models=round_models, settings=settings)


# -- the transfer attack --------------------------------------------------------------------------


def _read_through(name: str, doc: str) -> Any:
    """A read-only property that returns ``self.target.<name>``."""
    return property(lambda self: getattr(self.target, name), doc=doc)


@dataclass(frozen=True)
class TransferResult:
    """What a :class:`TransferAttack` returns: the target's verdict and the source's own.

    Attributes:
        target: the black-box result on the oracle: ``x_adv`` (the points crafted on the source),
            ``success`` and ``pred`` from the oracle's one answer per point, ``queries`` (1 per
            point), the source attack's threat model and norms, ``num_grads = 0`` (no gradient
            of the target was used).
        source: the white-box :class:`AttackResult` of the attack on the source model (its
            ``success`` is the white-box success on the source; ``num_grads`` what crafting cost).

    The common fields read through to ``target`` (``result.success`` is the transfer success).
    """

    target: AttackResult
    source: AttackResult

    x_adv = _read_through("x_adv", "``(B, *)`` the points crafted on the source.")
    success = _read_through("success", "``(B,)`` bool, the target was fooled (the transfer success).")
    pred = _read_through("pred", "``(B,)`` the target's labels at ``x_adv``.")
    norms = _read_through("norms", "``(B,)`` the perturbation norms.")
    queries = _read_through("queries", "``(B,)`` target queries per point (1).")
    threat = _read_through("threat", "The source attack's threat model.")

    @property
    def success_rate(self) -> float:
        """Fraction of the batch on which the target was fooled (see ``AttackResult.success``)."""
        return self.target.success_rate

    @property
    def source_success(self) -> Tensor:
        """``(B,)`` bool, the white-box attack fooled the source."""
        return self.source.success

    def __len__(self) -> int:
        return len(self.target)

    def summary(self) -> dict[str, Any]:
        return {**self.target.summary(), "source_success_rate": self.source.success_rate,
                "source_grads_per_point": float(self.source.num_grads.float().mean())}


def _source_name(source: nn.Module) -> str:
    return type(source).__name__


@dataclass(frozen=True, kw_only=True, eq=False)
class TransferAttack(Attack):
    """Transfer attack: craft on a local source model, ask the target oracle once per point.

    ``x' = A(source, x, y)`` with the white-box attack ``A`` (any advlab gradient attack:
    FGSM, IFGSM, MIFGSM, PGD, APGD, ...); the target's answer ``O(x')`` decides success
    (untargeted: ``O(x') ≠ y``; targeted: ``O(x') = t``). The source may be a substitute from
    :func:`train_substitute` (Papernot et al. 2017), any model trained on the same task
    (Papernot, McDaniel & Goodfellow 2016, "Transferability in Machine Learning"), or an
    :class:`advlab.models.Ensemble` of surrogates (Dong et al. 2018, Algorithm 2). The threat
    model is the white-box attack's, which every ``x'`` respects.

    Returns a :class:`TransferResult`: ``.target`` is an :class:`AttackResult` built from the
    oracle's answers (1 query per point) by the attack lifecycle (so its ``success`` is the call's
    criterion, default "misclassified" or "the target", on those answers), ``.source`` the
    white-box result on the source. It asks the oracle only for labels (``access = "labels"``);
    a score oracle's answers also give ``confidence``.

    Example:
        >>> attack = TransferAttack(attack=MIFGSM(eps=0.1, steps=10), source=substitute)
        >>> result = attack(Oracle(target_model, output="label"), x, y)
        >>> result.success_rate, result.source.success_rate
    """

    access: ClassVar[str] = "labels"
    kind: ClassVar[str] = "bounded"

    attack: Any
    source: nn.Module

    def __post_init__(self) -> None:
        if isinstance(self.attack, type):
            raise TypeError(f"attack must be an attack instance, e.g. {self.attack.__name__}(eps=0.1), "
                            "not the class")
        if not callable(self.attack) or not all(hasattr(self.attack, a) for a in ("eps", "norm", "bounds")):
            raise TypeError("attack must be a white-box attack instance with eps, norm and bounds "
                            f"(FGSM, IFGSM, MIFGSM, PGD, ...), got {type(self.attack).__name__}")
        if isinstance(self.source, Oracle):
            raise TypeError("source must be a local model (nn.Module) that gradients flow through; the "
                            "oracle is the target, passed when calling the attack")
        if not isinstance(self.source, nn.Module):
            raise TypeError(f"source must be a torch.nn.Module (a substitute, a surrogate or an "
                            f"advlab.models.Ensemble), got {type(self.source).__name__}")

    def __repr__(self) -> str:
        return f"TransferAttack(attack={config_repr(self.attack)}, source={_source_name(self.source)})"

    def threat_model(self, *, targeted: bool = False) -> ThreatModel:
        """The white-box attack's threat model, which every crafted point respects."""
        if isinstance(self.attack, Attack):
            return self.attack.threat_model(targeted=targeted)
        return ThreatModel(norm=self.attack.norm, eps=self.attack.eps, bounds=tuple(self.attack.bounds),
                           targeted=targeted)

    def __call__(self, model: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None,
                 criterion: Criterion | None = None) -> TransferResult:
        as_oracle(model)  # the target is an oracle: refuse a model before crafting anything
        aim = {} if criterion is None else {"criterion": criterion}
        source = self.attack(self.source, x, y, target=target, generator=generator, **aim)
        result = execute(self, model, x, y, target=target, generator=generator, criterion=criterion,
                         extras={"x_adv": source.x_adv})
        return TransferResult(target=dataclasses.replace(result, attack=repr(self)), source=source)

    def _core(self, run: Run) -> None:
        """One query per point, on the points crafted on the source."""
        session, x_adv = run.session, run.extras["x_adv"]
        check_label_range(run.y, session.oracle.num_classes)
        if run.target is not None:
            check_label_range(run.target, session.oracle.num_classes, "target")
        answers = session(x_adv).to(run.x.device)
        everyone = torch.arange(run.x.shape[0], device=run.x.device)
        labels = labels_of(answers)
        hit = run.adversarial_labels(labels, everyone)
        if answers.dim() == 2:  # scores: they also give the confidence
            run.probabilities = are_probabilities(answers)
            run.record.record(everyone, x_adv, answers, hit)
        else:
            run.record.record(everyone, x_adv, None, hit)
            run.record.set_labels(everyone, labels)
        # one query per point, always answered: no point is ever cut short by its budget
        run.extras["exhausted"] = torch.zeros_like(hit)
