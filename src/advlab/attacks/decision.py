"""Decision-based (hard-label) black-box attacks: HopSkipJump and the Boundary attack.

A decision-based attacker sees only the model's top label. Both attacks here (``access =
"labels"``, ``kind = "minimal"``) start from an input the model already gets wrong (a user's
``starting_points`` or uniform noise that happens to be adversarial) and walk along the decision
boundary towards the clean input ``x``, so they are *minimal-norm* attacks: the threat model they
report has ``eps = math.inf`` and the attack's ``bounds``, and ``result.norms`` are the distances
found (upper bounds on each point's distance to the decision boundary). They take an
:class:`advlab.oracle.Oracle`, with ``output="label"`` or ``output="scores"`` (of which only the
argmax is used: the two give identical results).

* :class:`HopSkipJump` (:mod:`advlab.attacks.hopskipjump`; Chen, Jordan & Wainwright, IEEE S&P
  2020), L2 or L∞.
* :class:`BoundaryAttack` (:mod:`advlab.attacks.boundary`; Brendel, Rauber & Bethge, ICLR 2018),
  L2.

What the results promise, for every point:

* ``x_adv`` is the closest input (in the attack's norm) that the oracle answered as adversarial
  (by the call's criterion) during the call, every queried input counting (a Monte-Carlo probe or
  a spherical candidate included); it is exactly the tensor that was queried, so ``success`` and
  ``pred`` are oracle answers on the returned points and cost no extra query. A point for which
  no adversarial input was ever found returns ``x`` unchanged with ``success=False``.
* Budgets are never exceeded: a point stops when its oracle budget or the attack's own
  ``queries`` (whichever is smaller) cannot pay for the next step; it keeps the best adversarial
  input found so far. ``budget_exhausted`` marks the points that stopped on the budget without an
  adversarial input.
* The clean input is queried first (one query): a point the oracle already misclassifies (or,
  targeted, already assigns to the target) is returned unchanged with norm 0.

All points of a batch advance together: one oracle call per binary-search step, one per
step-size trial and one for all Monte-Carlo probes of all points (``points × samples`` rows,
charged per point through :meth:`QuerySession.__call__`'s index). Randomness comes only from
``generator`` (a fresh one seeded with 0 when none is given), so a seed fixes the output.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``; ``y``, ``target`` ``(B,)`` int64;
``starting_points`` ``(B, *)`` like ``x``.

Example:
    >>> from advlab.oracle import Oracle
    >>> from advlab.attacks.decision import HopSkipJump
    >>> oracle = Oracle(model, output="label", budget=5000)
    >>> result = HopSkipJump(norm="l2", queries=5000)(oracle, x, y, generator=torch.Generator().manual_seed(0))
    >>> result.norms[result.success].median(), result.queries.max()
"""

from __future__ import annotations

from advlab.attacks.boundary import BoundaryAttack
from advlab.attacks.hopskipjump import HopSkipJump

__all__ = ["BoundaryAttack", "HopSkipJump"]
