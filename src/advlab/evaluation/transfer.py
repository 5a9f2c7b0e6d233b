"""Transferability matrices: how often adversarial examples crafted on one model fool another.

Papernot, McDaniel & Goodfellow (2016), "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples": adversarial examples crafted with a white-box attack
on a *source* model (a DNN, a logistic regression, an SVM, ... here any ``nn.Module``) are shown to
every *target* model; cell ``(s, t)`` is the fraction that ``t`` misclassifies.

Denominators (STYLE principle 6), stated in every row and table:

* transfer rate of ``(s, t)`` = ``#{i : t(x_i) = y_i and t(x'_i) ≠ y_i} / #{i : t(x_i) = y_i}``:
  over the points the **target** classifies correctly, whether or not the attack fooled the source
  (``x'`` is crafted on every point of ``x``);
* the conditional rate, over the target-correct points on which the attack **also fooled the
  source** (``source_fooled``), is stored beside it;
* white-box success of ``s`` = ``#{i : s(x_i) = y_i and s(x'_i) ≠ y_i} / #{i : s(x_i) = y_i}``.

All predictions on ``x'`` come from one forward pass per model in the same batches, so when one
module is both a source and a target its diagonal cell equals its white-box success exactly.
Targeted attacks are not measured here (untargeted ``x' = A(s, x, y)``).

Example:
    >>> m = transfer_matrix({"lr": logreg, "mlp": mlp, "cnn": cnn}, {"lr": logreg, "mlp": mlp,
    ...                     "cnn": cnn}, FGSM(eps=0.1), x, y)
    >>> print(m.table())
    >>> m.rate("cnn", "lr")
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from advlab.attacks.contract import Attack
from advlab._checks import check_inputs, check_model, eval_mode
from advlab.attacks._base import config_repr
from advlab.threat import ThreatModel, lp_norm

log = logging.getLogger(__name__)

__all__ = ["TransferCell", "TransferMatrix", "WhiteBox", "transfer_matrix"]


def _rate_property(count: str, total: str, doc: str) -> Any:
    """A read-only ``float`` property ``self.<count> / self.<total>`` of two integer fields, NaN
    when the denominator is 0 (one rule for every rate below)."""

    def rate(self: Any) -> float:
        denominator = getattr(self, total)
        return getattr(self, count) / denominator if denominator else math.nan

    return property(rate, doc=doc)


@dataclass(frozen=True)
class TransferCell:
    """One (source, target) pair.

    Attributes:
        source, target: the names.
        transferred: target-correct points whose ``x'`` (crafted on ``source``) fools the target.
        target_correct: points the target classifies correctly (the denominator of ``rate``).
        transferred_source_fooled: of those, the points on which the attack also fooled the source.
        source_fooled: target-correct points on which the attack fooled the source (the
            denominator of ``rate_given_source_fooled``).
    """

    source: str
    target: str
    transferred: int
    target_correct: int
    transferred_source_fooled: int
    source_fooled: int

    rate = _rate_property("transferred", "target_correct",
                          "Transfer success over the target's correctly classified points.")
    rate_given_source_fooled = _rate_property(
        "transferred_source_fooled", "source_fooled",
        "Transfer success over the target-correct points on which the source was fooled.")


@dataclass(frozen=True)
class WhiteBox:
    """The attack's success on its own source: ``fooled / correct`` over the source's correct points."""

    source: str
    fooled: int
    correct: int
    #: median distance (the threat's norm, else the attack's) of the successful examples
    median_norm: float = math.nan
    #: the attack that crafted this source's examples (and the model it ran on, if a surrogate)
    attack: str = ""

    rate = _rate_property("fooled", "correct", "White-box success over the source's correctly classified points.")


@dataclass
class TransferMatrix:
    """The cells of a transferability study, the white-box successes, and their provenance."""

    sources: list[str]
    targets: list[str]
    cells: dict[tuple[str, str], TransferCell]
    white_box: dict[str, WhiteBox]
    clean_accuracy: dict[str, float]
    n: int
    attack: str
    provenance: dict[str, Any] = field(default_factory=dict)
    per_point: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def cell(self, source: str, target: str) -> TransferCell:
        try:
            return self.cells[(source, target)]
        except KeyError:
            raise KeyError(f"no cell for source {source!r} and target {target!r}; sources: "
                           f"{self.sources}, targets: {self.targets}") from None

    def rate(self, source: str, target: str) -> float:
        """Transfer success of ``source`` on ``target`` (over the target's correct points)."""
        return self.cell(source, target).rate

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per (source, target): counts, rates, denominators, and the source's white-box."""
        rows = []
        for s in self.sources:
            wb = self.white_box[s]
            for t in self.targets:
                c = self.cells[(s, t)]
                rows.append({"source": s, "target": t, "attack": self.attack, "n": self.n,
                             "transferred": c.transferred, "target_correct": c.target_correct,
                             "rate": c.rate,
                             "transferred_source_fooled": c.transferred_source_fooled,
                             "source_fooled": c.source_fooled,
                             "rate_given_source_fooled": c.rate_given_source_fooled,
                             "white_box_fooled": wb.fooled, "source_correct": wb.correct,
                             "white_box_rate": wb.rate, "white_box_median_norm": wb.median_norm,
                             "source_attack": wb.attack})
        return rows

    def table(self) -> str:
        """Markdown: sources as rows, targets as columns, ``rate % (num/den)``; white-box column."""
        head = (f"Transfer success (%) of {self.attack} on n = {self.n} points: row = source (where "
                "the examples are crafted), column = target. Each cell is over the points the TARGET "
                "classifies correctly (count in brackets), whether or not the source was fooled. "
                "'white-box' is the success on the source itself over its own correct points.\n\n")
        cols = "| source \\ target | " + " | ".join(self.targets) + " | white-box |"
        sep = "|---|" + "---:|" * (len(self.targets) + 1)
        lines = [cols, sep]
        for s in self.sources:
            cells = []
            for t in self.targets:
                c = self.cells[(s, t)]
                cells.append(f"{100 * c.rate:.1f} ({c.transferred}/{c.target_correct})")
            wb = self.white_box[s]
            cells.append(f"{100 * wb.rate:.1f} ({wb.fooled}/{wb.correct})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        acc = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.clean_accuracy.items())
        return head + "\n".join(lines) + f"\n\nClean accuracy: {acc}.\n"


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)])


def _describe(attack: Any) -> str:
    eps = getattr(attack, "eps", None)
    return type(attack).__name__ + (f"(eps={eps:g}, " if isinstance(eps, (int, float)) else "(") + \
        f"norm={getattr(attack, 'norm', '?')!r})"


def _model_name(model: Any) -> str:
    """A short name for the model an attack crafted on: the last layer of a Sequential (an SVC's
    logits say which output), else the class."""
    last = model[-1] if isinstance(model, nn.Sequential) and len(model) else model
    output = getattr(last, "output", None)
    return type(last).__name__ + (f"({output!r})" if isinstance(output, str) else "")


def _attack_norm(attack: Any) -> str:
    norm = str(getattr(attack, "norm", "linf"))
    return norm if norm in ("linf", "l2", "l1") else "linf"


def _attacks_per_source(attack: Any, sources: Mapping[str, nn.Module]) -> dict[str, Any]:
    """One attack per source: the same instance for all, or a ``{source: attack}`` mapping that
    names every source and nothing else."""
    def check(a: Any, where: str) -> Any:
        if isinstance(a, type) or not callable(a) or not hasattr(a, "bounds"):
            raise TypeError(f"{where} must be an attack instance such as FGSM(eps=0.1), got {a!r}")
        return a

    if isinstance(attack, Mapping):
        missing, extra = sorted(set(sources) - set(attack)), sorted(set(attack) - set(sources))
        if missing or extra:
            raise ValueError(f"attack maps sources to attacks: it must name every source exactly; "
                             f"missing {missing}, not sources {extra}")
        return {k: check(attack[k], f"attack[{k!r}]") for k in sources}
    check(attack, "attack")
    return {k: attack for k in sources}


def _check_models(name: str, models: Any) -> dict[str, nn.Module]:
    if not isinstance(models, Mapping) or not models:
        raise TypeError(f"{name} must be a non-empty dict {{name: nn.Module}}, got "
                        f"{type(models).__name__ if not isinstance(models, Mapping) else 'an empty dict'}")
    out = {}
    for k, m in models.items():
        if not isinstance(k, str):
            raise TypeError(f"{name} keys must be strings (model names), got {k!r}")
        check_model(m)
        out[k] = m
    return out


def transfer_matrix(sources: Mapping[str, nn.Module], targets: Mapping[str, nn.Module],
                    attack: Attack | Mapping[str, Attack], x: Tensor, y: Tensor, *, batch_size: int = 256,
                    seed: int = 0, crafted_with: Mapping[str, nn.Module] | None = None,
                    threat: ThreatModel | None = None) -> TransferMatrix:
    """Craft ``x' = attack(source, x, y)`` on every source and measure every target on it.

    Args:
        sources: ``{name: model}`` where examples are crafted (any ``nn.Module`` returning logits:
            a logistic regression, an MLP, a CNN, an :class:`advlab.models.Ensemble`, an estimator
            from :func:`advlab.models.as_model`, ...).
        targets: ``{name: model}`` the examples are shown to. A module may appear in both.
        attack: a white-box attack instance (FGSM, IFGSM, MIFGSM, PGD, ...), untargeted; or
            ``{source name: attack}``, one per source, so that each learning technique crafts with
            its own attack (Papernot et al. 2016: a tree with the tree attack, a forest through a
            decision-based attack, a k-NN through its surrogate).
        x, y: ``(N, *)`` inputs inside the attack's bounds and ``(N,)`` labels.
        batch_size: points per attack call and per forward pass.
        seed: seeds one ``torch.Generator`` per source (for attacks with random starts).
        crafted_with: ``{source name: model}``: the model the source's attack runs on, when it is not
            the source itself (a differentiable surrogate: :class:`advlab.models.SoftKNN` for a
            k-NN, an SVM's smoother ``"confidence"`` output), or an :class:`advlab.oracle.Oracle`
            of the source for a black-box attack (HopSkipJump through its labels). White-box success is still measured on
            the source.
        threat: every crafted ``x'`` is projected into this threat model's ball around ``x`` (and
            its box) before any model sees it, so that sources crafting with different attacks
            (minimal-perturbation ones included) are compared at one budget.

    Returns:
        A :class:`TransferMatrix`; see the module docstring for the denominators.
    """
    sources = _check_models("sources", sources)
    targets = _check_models("targets", targets)
    attacks = _attacks_per_source(attack, sources)
    surrogates = dict(crafted_with or {})
    unknown = sorted(set(surrogates) - set(sources))
    if unknown:
        raise ValueError(f"crafted_with names {unknown}, which are not sources ({', '.join(sources)})")
    from advlab.oracle import Oracle

    for k, m in surrogates.items():
        if not isinstance(m, Oracle):
            check_model(m)
    if threat is not None and not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be an advlab.threat.ThreatModel, got {type(threat).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for k in set(sources) & set(targets):
        if sources[k] is not targets[k]:
            raise ValueError(f"the name {k!r} names different models in sources and targets; use one "
                             "name per model")
    all_bounds = {tuple(a.bounds) for a in attacks.values()} | ({tuple(threat.bounds)} if threat else set())
    if len(all_bounds) > 1:
        raise ValueError(f"the attacks (and threat) must share one input box; got {sorted(all_bounds)}")
    bounds = all_bounds.pop()
    for m in (*sources.values(), *targets.values(), *(m for m in surrogates.values() if isinstance(m, nn.Module))):
        check_inputs(m, x, y, bounds=bounds)
    x, n = x.detach(), int(x.shape[0])

    all_models = {id(m): m for m in (*sources.values(), *targets.values())}
    clean = {k: _predict(m, x, batch_size) for k, m in all_models.items()}
    correct = {k: p == y for k, p in clean.items()}

    cells: dict[tuple[str, str], TransferCell] = {}
    white_box: dict[str, WhiteBox] = {}
    per_point: dict[str, Tensor] = {}
    t0 = time.perf_counter()
    norm = threat.norm if threat is not None else None
    for s, source in sources.items():
        gen = torch.Generator(device=x.device).manual_seed(seed)
        craft, atk = surrogates.get(s, source), attacks[s]
        x_adv = torch.cat([atk(craft, x[i:i + batch_size], y[i:i + batch_size], generator=gen).x_adv
                           for i in range(0, n, batch_size)])
        if threat is not None:
            x_adv = threat.project(x_adv, x)
        distance = lp_norm(x_adv - x, norm or _attack_norm(atk))
        fooled = {k: _predict(m, x_adv, batch_size) != y for k, m in all_models.items()}
        src_correct, src_fooled = correct[id(source)], fooled[id(source)]
        hit = src_correct & src_fooled
        white_box[s] = WhiteBox(source=s, fooled=int(hit.sum()), correct=int(src_correct.sum()),
                                median_norm=float(distance[hit].median()) if bool(hit.any()) else math.nan,
                                attack=_describe(atk) + (f" on {_model_name(craft)}" if craft is not source else ""))
        per_point[f"{s}:source_fooled"] = src_fooled.clone()
        for t, target in targets.items():
            ok, hit = correct[id(target)], fooled[id(target)]
            cells[(s, t)] = TransferCell(
                source=s, target=t, transferred=int((ok & hit).sum()), target_correct=int(ok.sum()),
                transferred_source_fooled=int((ok & hit & src_fooled).sum()),
                source_fooled=int((ok & src_fooled).sum()))
            per_point[f"{s}->{t}"] = (ok & hit).clone()
    from advlab.evaluation.robustness import provenance
    attack_str = {k: config_repr(a) if dataclasses.is_dataclass(a) else repr(a) for k, a in attacks.items()}
    prov = provenance(seed=seed, batch_size=batch_size,
                      attack=attack_str if isinstance(attack, Mapping) else next(iter(attack_str.values())),
                      seconds=time.perf_counter() - t0)
    if threat is not None:
        prov["threat"] = {"norm": threat.norm, "eps": threat.eps, "bounds": list(threat.bounds)}
    if surrogates:
        prov["crafted_with"] = {k: type(m).__name__ for k, m in surrogates.items()}
    names = {**{k: id(m) for k, m in sources.items()}, **{k: id(m) for k, m in targets.items()}}
    clean_acc = {k: float(correct[i].float().mean()) for k, i in names.items()}
    return TransferMatrix(sources=list(sources), targets=list(targets), cells=cells,
                          white_box=white_box, clean_accuracy=clean_acc, n=n,
                          attack=("Each source's own attack" + (f" within {threat.norm} ε = {threat.eps:g}"
                                                                 if threat is not None else "")
                                  if isinstance(attack, Mapping) else _describe(attack)), provenance=prov,
                          per_point=per_point)
