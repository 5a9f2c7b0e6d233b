"""What every black-box attack shares: reading oracle answers, and a deprecated-alias warning.

A black-box attack declares ``access = "scores"`` or ``"labels"`` and runs through the attack
lifecycle (:func:`advlab.attacks.contract.execute`), which wraps the oracle, opens one
:class:`~advlab.oracle.QuerySession` per call (``run.session``) and builds the result: ``queries``
and ``num_forwards`` from the session, ``budget_exhausted`` from the core's own "stopped by the
budget" flags (``run.extras["exhausted"]``), ``success`` recomputed from the criterion on the
answers the core recorded at the returned points. ``num_grads`` is zero: no gradient was ever
available. The core checks ``session.remaining`` before each query and stops the points whose
budget is spent.
"""

from __future__ import annotations

import os
import sys
import functools
import warnings
from typing import Any, TypeVar

from torch import Tensor

from advlab.losses import cw_margin

#: ``(k,)`` margin that is > 0 exactly when the top class is adversarial: untargeted
#: ``max_{j≠y} s_j − s_y``, targeted ``s_t − max_{j≠t} s_j`` (:func:`advlab.losses.cw_margin`; on
#: probabilities it has the same sign as on logits).
score_margin = cw_margin


def labels_of(answers: Tensor) -> Tensor:
    """Oracle answers (labels ``(k,)`` or scores ``(k, C)``) -> labels ``(k,)``."""
    return answers if answers.dim() == 1 else answers.argmax(dim=1)


def are_probabilities(scores: Tensor) -> bool:
    """Whether the oracle answers probabilities (rows in [0, 1] summing to 1) rather than logits."""
    return bool(((scores >= 0) & (scores <= 1)).all()) and bool(
        ((scores.sum(dim=1) - 1).abs() <= 1e-3).all())


def check_label_range(labels: Tensor, num_classes: int | None, name: str = "y") -> None:
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise ValueError(f"{name} contains class {int(labels.max())} but the oracle answers "
                         f"{num_classes} classes (0..{num_classes - 1})")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def deprecated(message: str) -> None:
    """A :class:`DeprecationWarning` located at the first caller outside advlab (and outside the
    ``__init__`` a dataclass generates for an advlab config), so it names the user's line."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
                                 or str(frame.f_globals.get("__name__", "")).startswith("advlab")
                                 or frame.f_code.co_filename.endswith("dataclasses.py")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def margin_alias(config: Any) -> None:
    """``loss="margin"``, the old name of the C&W margin, becomes ``"cw"`` with a warning."""
    if config.loss == "margin":
        deprecated(f"{type(config).__name__}(loss='margin') is deprecated: the C&W margin is called "
                   "'cw' across advlab (advlab.losses); use loss='cw' (the same objective)")
        object.__setattr__(config, "loss", "cw")


_T = TypeVar("_T", bound=type)


def budget_alias(cls: _T) -> _T:
    """Accept ``queries=`` as the deprecated name of a black-box attack's ``budget`` (what it may
    spend per point; the result's ``queries`` is what it spent), with a warning, for one release.
    Reading ``config.queries`` also warns and gives the budget. Apply above ``@dataclass``."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "queries" in kwargs:
            if "budget" in kwargs:
                raise TypeError(f"{cls.__name__}: pass budget= only (queries= is its deprecated name)")
            deprecated(f"{cls.__name__}(queries=...) is deprecated: the per-point query budget is "
                       "called budget= across advlab (result.queries is what was spent)")
            kwargs["budget"] = kwargs.pop("queries")
        init(self, *args, **kwargs)

    def queries(self: Any) -> Any:
        deprecated(f"{cls.__name__}.queries is deprecated: read .budget (the same number)")
        return self.budget

    cls.__init__ = __init__  # type: ignore[misc]
    cls.queries = property(queries, doc="Deprecated name of ``budget``.")  # type: ignore[attr-defined]
    return cls
