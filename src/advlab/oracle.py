"""Query-only access to a classifier, for black-box attacks.

A black-box attacker can only *ask* the model: send inputs, read what the threat model lets it see,
and pay for every question. :class:`Oracle` is that access as a type (STYLE principle 4): it wraps
a ``torch.nn.Module`` or any Python callable (a scikit-learn estimator, a remote service), answers
either the top label (``output="label"``, the hard-label / decision-based setting) or the score
vector (``output="scores"``, the score-based setting), counts queries per point and enforces a
budget of queries per point. It holds no reference an attack could use to reach gradients: answers
are computed without a graph and returned detached, and the model lives only inside a closure.

Queries are counted in a :class:`QuerySession`, one per attack call on a batch of ``n`` points::

    oracle = Oracle(model, output="label", budget=1000)
    session = oracle.session(n)                 # fresh counters, one per point
    labels = session(x_rows, index)             # index: (k,) which of the n points each row serves
    session.queries                             # (n,) int64, queries spent on each point
    session.remaining                           # (n,) int64, queries left (a large number if no budget)

A query past a point's budget is refused: the whole call raises :class:`BudgetExceeded` and
nothing is answered or counted. Attacks check ``session.remaining`` before they ask, stop the
points whose budget is spent, and report them as such (``AttackResult.budget_exhausted``).

Shapes: inputs ``(k, *input_shape)``; ``index`` ``(k,)`` int64 in ``[0, n)``; label answers
``(k,)`` int64; score answers ``(k, num_classes)`` float.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from advlab._checks import eval_mode, model_device, quiet_eval

log = logging.getLogger(__name__)

Output = Literal["label", "scores"]

# what `remaining` reports for an oracle without a budget
UNLIMITED = 2**62


class BudgetExceeded(RuntimeError):
    """A query was refused because it would take a point past its query budget."""

    def __init__(self, message: str, points: Tensor) -> None:
        super().__init__(message)
        self.points = points


class OracleError(ValueError):
    """The model or callable behind an oracle answered something unusable (shape, NaN, type)."""


def _to_tensor(value: Any, *, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic return types
        raise OracleError(f"the oracle's callable returned {type(value).__name__}, which is not an "
                          "array; return a torch.Tensor or a NumPy array") from exc
    if arr.dtype == object:
        raise OracleError("the oracle's callable returned an object array; return numbers")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_floating_point():
        t = t.to(like.dtype if like.is_floating_point() else torch.float32)
    return t.to(like.device)


class Oracle:
    """Query-only access to a classifier, with per-point query counting and a budget.

    Args:
        model: a ``torch.nn.Module`` returning logits ``(k, C)``, or any callable taking a float
            tensor ``(k, *input_shape)`` and returning scores ``(k, C)`` (tensor or NumPy array,
            e.g. ``lambda x: clf.predict_proba(x.flatten(1).numpy())``) or, for ``output="label"``
            only, labels ``(k,)``.
        output: ``"label"`` answers only the top class; ``"scores"`` the score vector (logits for a
            Module; for a callable, whatever it returns: probabilities or logits).
        budget: queries allowed per point, an integer ≥ 1, or ``None`` for no limit.
        batch_size: largest number of rows sent to the model at once (default 256; ``None``: no
            split). Black-box attacks send thousands of probe rows per call; on a CPU a small CNN
            forwards 256-row chunks ~10x faster per row than one 4,096-row batch (measured on the
            Fashion-MNIST bench model), and chunks bound memory.

    A Module in training mode is queried in eval mode (with a warning) and its modes restored.

    Example:
        >>> oracle = Oracle(model, output="scores", budget=1000)
        >>> result = SquareAttack(eps=0.1)(oracle, x, y)
        >>> result.queries          # (B,) queries each point cost
    """

    def __init__(self, model: nn.Module | Callable[[Tensor], Any], *, output: Output = "scores",
                 budget: int | None = None, batch_size: int | None = 256) -> None:
        if output not in ("label", "scores"):
            raise ValueError(f"output must be 'label' or 'scores', got {output!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be an integer >= 1 (queries per point) or None, got {budget!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        self._output: Output = output
        self._budget = budget
        self._batch_size = batch_size
        self._num_classes: int | None = None
        self._total = 0
        self._device = model_device(model) if isinstance(model, nn.Module) else None
        param = next((p for p in model.parameters() if p.is_floating_point()), None) \
            if isinstance(model, nn.Module) else None
        self._dtype = param.dtype if param is not None else None
        self._answer = _make_answer(model)  # the model stays inside this closure

    # -- what an attack may know --------------------------------------------------------------

    @property
    def output(self) -> Output:
        return self._output

    @property
    def budget(self) -> int | None:
        return self._budget

    @property
    def num_classes(self) -> int | None:
        """Number of classes, known after the first score answer (``None`` before, and for a
        callable that answers labels only)."""
        return self._num_classes

    @property
    def total_queries(self) -> int:
        """Queries answered by this oracle over all sessions."""
        return self._total

    def session(self, n: int) -> QuerySession:
        """Fresh per-point counters for an attack on ``n`` points."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a query session needs n >= 1 points, got {n!r}")
        return QuerySession(self, n)

    def with_budget(self, budget: int | None) -> Oracle:
        """The same access with another budget (shares the model, not the counters)."""
        other = object.__new__(Oracle)
        other.__dict__.update(self.__dict__)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be an integer >= 1 (queries per point) or None, got {budget!r}")
        other._budget = budget
        other._total = 0
        return other

    def __repr__(self) -> str:
        return f"Oracle(output={self._output!r}, budget={self._budget!r})"

    # -- answering ----------------------------------------------------------------------------

    def _ask(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("oracle queries must be floating-point torch.Tensors of shape (k, ...)")
        if x.dim() < 2:
            raise ValueError(f"oracle queries need a batch dimension (k, ...), got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("an oracle query contains NaN or Inf inputs")
        if self._device is not None and x.device != self._device:
            raise ValueError(f"the oracle's model is on {self._device} but the query is on {x.device}")
        if self._dtype is not None and x.dtype != self._dtype:
            raise TypeError(f"the queries are {x.dtype} but the oracle's model has {self._dtype} parameters; "
                            f"use x.to({self._dtype}) or convert the model")
        k = x.shape[0]
        if k == 0:
            raise ValueError("an oracle query must contain at least one input")
        x = x.detach()
        step = self._batch_size or k
        parts = [self._answer(x[i:i + step]) for i in range(0, k, step)]
        out = torch.cat([_to_tensor(p, like=x) for p in parts]) if len(parts) > 1 else _to_tensor(parts[0], like=x)
        out = self._validate(out, k)
        self._total += k
        return out

    def _validate(self, out: Tensor, k: int) -> Tensor:
        if out.dim() == 1:
            if self._output == "scores":
                raise OracleError(f"output='scores' but the oracle's callable returned shape ({k},): "
                                  "labels, not a score vector per input; use output='label'")
            if out.shape[0] != k or out.is_floating_point() or out.dtype == torch.bool:
                raise OracleError(f"the oracle's callable returned labels of shape {tuple(out.shape)} "
                                  f"and dtype {out.dtype}; expected ({k},) integer class indices")
            return out.long()
        if out.dim() != 2 or out.shape[0] != k:
            raise OracleError(f"the oracle's callable returned shape {tuple(out.shape)} for {k} inputs; "
                              f"expected scores ({k}, num_classes)")
        if out.shape[1] < 2:
            raise OracleError(f"the oracle's callable returned {out.shape[1]} score per input; a classifier "
                              "needs at least 2 classes")
        if not out.is_floating_point():
            out = out.float()
        if not bool(torch.isfinite(out).all()):
            raise OracleError("the oracle's callable returned NaN or Inf scores")
        if self._num_classes is None:
            self._num_classes = int(out.shape[1])
        elif out.shape[1] != self._num_classes:
            raise OracleError(f"the oracle's callable returned {out.shape[1]} classes, earlier {self._num_classes}")
        if self._output == "label":
            return out.argmax(dim=1)
        return out


def _call(model: nn.Module, x: Tensor) -> Tensor:
    """The module's answer to ``x``, with what went wrong said in advlab's words."""
    try:
        out = model(x)
    except (RuntimeError, IndexError, TypeError) as err:
        raise OracleError(f"the oracle's model failed on queries of shape {tuple(x.shape)} and dtype "
                          f"{x.dtype} ({err}); check that x has the shape and dtype the model expects") from err
    if not isinstance(out, Tensor):
        raise OracleError(f"the oracle's model returned a {type(out).__name__}, not a tensor of logits "
                          "(k, num_classes); wrap it so that forward returns the logits, e.g. "
                          "Oracle(lambda x: model(x)[0]) or a module that picks them")
    return out.detach()


def _make_answer(model: nn.Module | Callable[[Tensor], Any]) -> Callable[[Tensor], Any]:
    if isinstance(model, nn.Module):
        warned = False
        modules: list[nn.Module] = []

        def answer(x: Tensor) -> Tensor:
            nonlocal warned
            if not modules:  # the submodules, listed once: walking them costs 9% of a tiny model's query
                modules.extend(model.modules())
            if not any(m.training for m in modules):   # the usual case: nothing to switch or restore
                with torch.no_grad():
                    return _call(model, x)
            if warned:   # warn once per oracle, not once per query
                with torch.no_grad(), quiet_eval(model):
                    return _call(model, x)
            warned = True
            with torch.no_grad(), eval_mode(model):
                return _call(model, x)
    else:
        def answer(x: Tensor) -> Any:
            with torch.no_grad():
                return model(x)
    return answer


@dataclass
class QuerySession:
    """Per-point query counters for one attack call on ``n`` points (see :class:`Oracle`)."""

    oracle: Oracle
    n: int

    def __post_init__(self) -> None:
        self._queries = torch.zeros(self.n, dtype=torch.long)

    @property
    def output(self) -> Output:
        return self.oracle.output

    @property
    def budget(self) -> int | None:
        return self.oracle.budget

    @property
    def queries(self) -> Tensor:
        """``(n,)`` int64, queries answered for each point (a copy)."""
        return self._queries.clone()

    @property
    def remaining(self) -> Tensor:
        """``(n,)`` int64, queries each point may still make."""
        if self.oracle.budget is None:
            return torch.full((self.n,), UNLIMITED, dtype=torch.long)
        return self.oracle.budget - self._queries

    def exhausted(self) -> Tensor:
        """``(n,)`` bool, points with no query left."""
        return self.remaining <= 0

    def __call__(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """Answer the rows of ``x``; row ``i`` is charged to point ``index[i]``.

        Without ``index`` the rows are the ``n`` points in order. Raises :class:`BudgetExceeded`
        (answering and counting nothing) if any point would go past its budget.
        """
        if index is None:
            if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] != self.n:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"without an index a query must have one row per point ({self.n}), got {shape}")
            idx = torch.arange(self.n)
        else:
            if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype.is_floating_point:
                raise TypeError("index must be a (k,) integer tensor of point numbers")
            idx = index.detach().to("cpu", torch.long)
            if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] != idx.shape[0]:
                raise ValueError("the query and its index must have the same number of rows")
        # (bincount refuses a negative number; a number >= n makes the count longer than n)
        try:
            cost = torch.bincount(idx, minlength=self.n)
        except RuntimeError:
            cost = None
        if cost is None or cost.shape[0] > self.n:
            raise ValueError(f"index holds point numbers outside [0, {self.n})")
        if self.oracle.budget is not None:
            over = (self._queries + cost) > self.oracle.budget
            if bool(over.any()):
                pts = over.nonzero().flatten()
                raise BudgetExceeded(f"query refused: {pts.numel()} point(s) would exceed the budget of "
                                     f"{self.oracle.budget} queries per point (first: point {int(pts[0])})",
                                     pts)
        answers = self.oracle._ask(x)
        self._queries += cost
        return answers


def as_oracle(obj: Any, *, output: Output = "scores") -> Oracle:
    """``obj`` if it is an :class:`Oracle`; otherwise a clear error (attacks never take models)."""
    if isinstance(obj, Oracle):
        return obj
    if isinstance(obj, nn.Module):
        raise TypeError("black-box attacks take an advlab.oracle.Oracle, not a model: wrap it with "
                        f"Oracle(model, output={output!r}, budget=...) so queries are counted and "
                        "gradients stay out of reach")
    raise TypeError(f"expected an advlab.oracle.Oracle, got {type(obj).__name__}")
