"""The cross-technique transferability matrix of Papernot, McDaniel & Goodfellow (2016).

"Transferability in Machine Learning: from Phenomena to Black-Box Attacks using Adversarial
Samples" (arXiv:1605.07277), Sec. 4 and Fig. 3: adversarial examples crafted on one learning
technique (a DNN, logistic regression, a linear SVM, a decision tree, k-NN) are shown to every
other one and to an ensemble of them; examples crafted on logistic regression fooled their
decision tree 87.4% of the time.

:func:`fit_learners` fits the techniques on the same training data with scikit-learn (no download,
deterministic under ``seed``), and :func:`technique_matrix` makes each one craft with its own
white-box attack, projects every example into one threat model (norm, ε, box), and measures every
target with :func:`~advlab.evaluation.transfer_matrix` (its denominators: each cell over the points
the target classifies correctly; the diagonal is the source's white-box success):

============  ==========================================  ============================================
technique     the target (as a model)                     how it crafts (its own white-box attack)
============  ==========================================  ============================================
``dnn``       ``MLPClassifier``, converted exactly        PGD on itself
``lr``        ``LogisticRegression``, exact               PGD on itself
``svm``       ``LinearSVC``, exact                        PGD on itself
``rbf_svm``   ``SVC(kernel="rbf")``, exact                PGD on its ``"confidence"`` output (smoother)
``tree``      ``DecisionTreeClassifier`` (no gradients)   the tree attack (nearest other-class leaf)
``forest``    ``RandomForestClassifier`` (no gradients)   HopSkipJump through its labels only
``knn``       ``KNeighborsClassifier`` (no gradients)     PGD on :class:`~advlab.models.SoftKNN`
``ensemble``  majority vote of dnn, lr, svm, tree, knn    PGD on the mean log-probabilities of its
                                                          members' differentiable stand-ins
============  ==========================================  ============================================

Minimal-perturbation attacks (the tree attack, HopSkipJump) return the closest example they find;
projected into the ε-ball, one that needed more than ε no longer fools anything, so every source is
measured at the same budget.

Example:
    >>> learners = fit_learners(x_train, y_train, seed=0)
    >>> m = technique_matrix(learners, x_test, y_test, eps=0.3, norm="linf")
    >>> m.rate("lr", "tree")      # Papernot et al.: 0.874 on MNIST
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from advlab.evaluation.transfer import TransferMatrix, transfer_matrix
from advlab.threat import ThreatModel, canonical_norm

__all__ = ["LEARNERS", "Learner", "VoteEnsemble", "fit_learners", "technique_matrix"]

#: the techniques of :func:`fit_learners`, in the order of the matrix
LEARNERS: tuple[str, ...] = ("dnn", "lr", "svm", "rbf_svm", "tree", "forest", "knn", "ensemble")
#: the members of the ensemble (Papernot et al.'s five techniques)
ENSEMBLE_MEMBERS: tuple[str, ...] = ("dnn", "lr", "svm", "tree", "knn")


@dataclass(frozen=True)
class Learner:
    """One fitted technique: the model shown adversarial examples, what its attack runs on
    (itself, a differentiable stand-in, or a label-only :class:`~advlab.oracle.Oracle` of it) and
    how it crafts (``"pgd"``, ``"tree"``, ``"hsj"``)."""

    name: str
    model: nn.Module
    craft_on: Any
    crafts_with: str
    estimator: Any = None


class VoteEnsemble(nn.Module):
    """A majority vote of classifiers: logits ``log((votes_k + 1e-3) / (M + 1e-3 K))``, so the
    argmax is the most voted class (ties to the lowest index, as ``numpy.argmax``). It has no
    gradient (votes are counts): ``differentiable = False``."""

    differentiable = False

    def __init__(self, members: Mapping[str, nn.Module], num_classes: int) -> None:
        super().__init__()
        self.members = nn.ModuleDict(dict(members))
        self.num_classes = int(num_classes)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            votes = torch.zeros(x.shape[0], self.num_classes, dtype=x.dtype, device=x.device)
            for m in self.members.values():
                votes += nn.functional.one_hot(m(x).argmax(dim=1), self.num_classes).to(x.dtype)
        m_count, k = len(self.members), self.num_classes
        return torch.log((votes + 1e-3) / (m_count + 1e-3 * k))


class _MeanLogProb(nn.Module):
    """The mean of members' log-softmax: a differentiable stand-in for their vote."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members]).mean(dim=0)


def fit_learners(x: Tensor, y: Tensor, *, learners: Sequence[str] = LEARNERS, seed: int = 0,
                 hidden: tuple[int, ...] = (100,), neighbours: int = 3, trees: int = 50) -> dict[str, Learner]:
    """Fit each technique in ``learners`` on ``(x, y)`` (``x`` ``(N, *)`` is flattened for the
    estimators; labels ``0 .. K-1``) and return ``{name: Learner}`` in :data:`LEARNERS` order.

    ``ensemble`` needs its members (:data:`ENSEMBLE_MEMBERS`): they are fitted too, but only the
    names asked for are returned. Every estimator is seeded with ``seed``.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    from advlab.models.sklearn import SoftKNN, as_model, from_sklearn
    from advlab.oracle import Oracle

    unknown = [n for n in learners if n not in LEARNERS]
    if unknown or not learners:
        raise ValueError(f"unknown learners {unknown or '(none given)'}: use some of {', '.join(LEARNERS)}")
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (N, *) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    shape = tuple(x.shape[1:])
    flat, labels = x.detach().cpu().flatten(1).numpy().astype(np.float64), y.detach().cpu().numpy()
    k = int(labels.max()) + 1
    if not np.array_equal(np.unique(labels), np.arange(k)):
        raise ValueError(f"labels must be 0 .. K-1 with every class present, got {np.unique(labels).tolist()}")
    wanted = list(dict.fromkeys([n for n in LEARNERS if n in learners]))
    fit = set(wanted) | (set(ENSEMBLE_MEMBERS) if "ensemble" in wanted else set())
    makers = {
        "dnn": lambda: MLPClassifier(hidden_layer_sizes=hidden, max_iter=300, random_state=seed),
        "lr": lambda: LogisticRegression(max_iter=1000, random_state=seed),
        "svm": lambda: LinearSVC(max_iter=5000, random_state=seed),
        "rbf_svm": lambda: SVC(kernel="rbf", gamma="scale", random_state=seed),
        "tree": lambda: DecisionTreeClassifier(random_state=seed),
        "forest": lambda: RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1),
        "knn": lambda: KNeighborsClassifier(n_neighbors=neighbours),
    }
    out: dict[str, Learner] = {}
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    for name in [n for n in LEARNERS if n in fit and n != "ensemble"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = makers[name]().fit(flat, labels)
        model = as_model(est, input_shape=shape)
        if name == "rbf_svm":
            craft, how = from_sklearn(est, input_shape=shape, svm_output="confidence"), "pgd"
        elif name == "knn":
            craft, how = SoftKNN(est, input_shape=shape), "pgd"
        elif name == "tree":
            craft, how = model, "tree"
        elif name == "forest":
            craft, how = Oracle(model, output="label"), "hsj"
        else:
            craft, how = model, "pgd"
        out[name] = Learner(name=name, model=model, craft_on=craft, crafts_with=how, estimator=est)
    if "ensemble" in wanted:
        members = {n: out[n].model for n in ENSEMBLE_MEMBERS}
        stand_ins = [out[n].craft_on for n in ENSEMBLE_MEMBERS if out[n].crafts_with == "pgd"]
        out["ensemble"] = Learner(name="ensemble", model=VoteEnsemble(members, k),
                                  craft_on=_MeanLogProb(stand_ins), crafts_with="pgd")
    return {n: out[n] for n in wanted}


def technique_matrix(learners: Mapping[str, Learner], x: Tensor, y: Tensor, *, eps: float,
                     norm: str = "linf", steps: int = 20, budget: int = 1000,
                     bounds: tuple[float, float] = (0.0, 1.0), sources: Sequence[str] | None = None,
                     targets: Sequence[str] | None = None, batch_size: int = 256,
                     seed: int = 0) -> TransferMatrix:
    """Every learner crafts on ``(x, y)`` with its own attack; every learner is shown the results.

    Args:
        learners: from :func:`fit_learners` (or your own :class:`Learner` s).
        x, y: the test points ``(N, *)`` in ``bounds`` and their labels.
        eps, norm: the threat model every crafted example is projected into (``linf`` or ``l2``).
        steps: PGD iterations for the gradient sources (step ``2.5 ε / steps``, random start).
        budget: HopSkipJump's query budget per point for the forest.
        sources, targets: subsets of ``learners`` (default: all of them, both ways).

    Returns:
        A :class:`~advlab.evaluation.TransferMatrix`; its ``white_box[s].attack`` says how each
        source crafted, and the diagonal is each source's white-box success at ``eps``.
    """
    from advlab.attacks import PGD, HopSkipJump, TreeAttack

    norm = canonical_norm(norm)
    if norm not in ("linf", "l2"):
        raise ValueError(f"the technique matrix takes norm linf or l2 (the tree attack's and HopSkipJump's), "
                         f"got {norm!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    threat = ThreatModel(norm=norm, eps=float(eps), bounds=bounds)
    src = list(sources) if sources is not None else list(learners)
    tgt = list(targets) if targets is not None else list(learners)
    missing = sorted({*src, *tgt} - set(learners))
    if missing:
        raise ValueError(f"{missing} are not among the learners ({', '.join(learners)})")
    attacks: dict[str, Any] = {}
    for s in src:
        how = learners[s].crafts_with
        if how == "pgd":
            attacks[s] = PGD(eps=float(eps), norm=norm, steps=steps, step_size=2.5 * eps / steps,
                             random_start=True, bounds=bounds)
        elif how == "tree":
            attacks[s] = TreeAttack(norm=norm, bounds=bounds)
        elif how == "hsj":
            attacks[s] = HopSkipJump(norm=norm, budget=budget, bounds=bounds)
        else:
            raise ValueError(f"learner {s!r} crafts with {how!r}; advlab knows pgd, tree and hsj")
    crafted_with = {s: learners[s].craft_on for s in src if learners[s].craft_on is not learners[s].model}
    m = transfer_matrix({s: learners[s].model for s in src}, {t: learners[t].model for t in tgt}, attacks,
                        x, y, batch_size=batch_size, seed=seed, crafted_with=crafted_with, threat=threat)
    m.provenance["technique_matrix"] = {"eps": float(eps), "norm": norm, "steps": steps, "budget": budget,
                                        "crafts_with": {s: learners[s].crafts_with for s in src}}
    return m
