"""Score-based black-box attacks: Square Attack, SimBA and NES.

A score-based attacker sees the model's score vector (logits or probabilities) for each input it
asks about, and nothing else: every attack here declares ``access = "scores"``, takes an
:class:`advlab.oracle.Oracle` built with ``output="scores"`` (a label-only oracle is refused),
counts every question through the oracle's :class:`~advlab.oracle.QuerySession`, and respects the
oracle's per-point budget as well as its own ``queries``: a point whose budget is spent stops and
is reported in ``AttackResult.budget_exhausted``, never as a success.

* :class:`SquareAttack` (:mod:`advlab.attacks.square`; Andriushchenko, Croce, Flammarion & Hein,
  ECCV 2020), L∞ and L2: random search over square-shaped updates, accepting a candidate only if
  it raises the objective.
* :class:`SimBA` (:mod:`advlab.attacks.simba`; Guo, Gardner, You, Wilson & Weinberger, ICML 2019),
  pixel or DCT basis: step ``±ε`` along random orthonormal directions, keep a step if it lowers
  the true-class probability.
* :class:`NES` (:mod:`advlab.attacks.nes`; Ilyas, Engstrom, Athalye & Lin, ICML 2018): a
  natural-evolution-strategies gradient estimate from antithetic Gaussian samples drives
  projected gradient steps.

Common conventions (shared with every advlab attack, see :mod:`advlab.attacks.contract`):

* Each attack is a frozen dataclass of keyword-only hyperparameters; calling it as
  ``attack(oracle, x, y, *, target=None, generator=None, criterion=None)`` runs the attack
  lifecycle and returns an :class:`~advlab.attacks.AttackResult`; it changes nothing it was given
  (the inputs, the global RNG, the model behind the oracle). Randomness comes only from
  ``generator`` (a fresh generator seeded with 0 when ``None``), so the same seed gives the same
  result.
* The first query of every point is the clean input. A point the model already misclassifies
  (targeted: already assigns to ``target``) succeeds with zero perturbation after that one query.
* Success is decided on oracle answers by the call's criterion (default: the top class is not
  ``y``; targeted: it is ``target``). The returned ``success``, ``pred`` and ``confidence`` are
  those answers for the returned points (no extra query). ``confidence`` is the probability of
  ``pred``: the oracle's scores if they are probabilities (rows in ``[0, 1]`` summing to 1), else
  their softmax.
* The objectives are the C&W margin ``loss="cw"`` (:func:`advlab.losses.cw_margin` on the scores;
  ``"margin"`` is its deprecated name) and the cross-entropy ``"ce"``.
* The attacks work on whole batches: every query is one call with one row per active point
  (NES: ``samples`` rows per point), charged to its point through the session's index.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``: Square Attack takes images ``(B, C, H, W)``,
signals ``(B, C, T)`` (1-D windows) and tabular ``(B, D)`` inputs (random feature subsets); SimBA's
pixel basis any shape, its DCT basis images (2-D DCT) and signals (the 1-D DCT of each channel), and
refuses tabular inputs (use ``basis="pixel"``); ``y``, ``target`` ``(B,)`` int64.

Example:
    >>> from advlab.oracle import Oracle
    >>> oracle = Oracle(model, output="scores", budget=1000)
    >>> result = SquareAttack(eps=0.1)(oracle, x, y)
    >>> result.success.float().mean(), result.queries[result.success].float().mean()
"""

from __future__ import annotations

from advlab.attacks.nes import NES
from advlab.attacks.simba import SimBA, dct_matrix
from advlab.attacks.square import SquareAttack, square_p_schedule

__all__ = ["NES", "SimBA", "SquareAttack", "dct_matrix", "square_p_schedule"]
