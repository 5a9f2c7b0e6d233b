"""Fawzi, Fawzi & Fawzi (NeurIPS 2018), "Adversarial vulnerability for any classifier": the bounds
and the measurements that test them.

Setting. Data are ``x = g(z)`` with ``z ~ N(0, I_d)`` and a generator ``g: R^d -> [0, 1]^D`` that is
``L``-Lipschitz, ``||g(z) - g(z')||_2 <= L ||z - z'||_2``. For a classifier ``f`` the paper defines,
at ``x = g(z)``,

* the in-distribution robustness ``r_in(x) = min_r ||g(z + r) - x||_2  s.t.  f(g(z + r)) != f(x)``,
  the distance to the closest *generated* image of another class (eq. 2 of the seed);
* the unconstrained robustness ``r_unc(x) = min_r ||r||_2  s.t.  f(x + r) != f(x)`` (eq. 3); since
  ``g(z + r)`` is itself an input, ``r_unc(x) <= r_in(x)``;
* and, in its experiments, the robustness in latent space ``min_r ||r||_2 s.t. f(g(z + r)) != f(x)``.

Theorem 1 bounds ``r_in`` for *every* ``f``: with ``a_i = Φ^{-1}(P(f(g(z)) != i))``,

    P(r_in(x) <= η) >= Σ_i [Φ(a_i + η/L) - Φ(a_i)]                       (eq. 4, fawzi_bound_classwise)
    P(r_in(x) <= η) >= 1 - √(π/2) · exp(-(η/L)² / 2)    if every P(f = i) <= 1/2   (eq. 6, fawzi_bound)

so the median of ``r_in`` is at most ``L · √(ln 2π) ≈ 1.3557 L`` (where eq. 6 reaches 1/2). In latent
space the same theorem with the identity generator (``L = 1``) bounds the latent robustness.

What this module computes, and how each number relates to the quantity it names:

* :func:`fawzi_bound`, :func:`fawzi_bound_classwise`, :func:`median_upper_bound`: closed forms.
* :func:`lipschitz_estimate`: an empirical *lower* estimate of ``L`` (every number it reports is a
  ratio or a Jacobian norm the generator really attains). Using it in the bound makes the bound
  larger than the one with the true ``L`` (the bound decreases in ``L``).
* :func:`latent_search`, :func:`measure_robustness`: every reported robustness is the size of a
  perturbation that was found and *verified* to change the label, so it is an *upper* bound on the
  true minimum (like any attack), made tight along its direction by bisection.
* Theorem 2 (:mod:`.projected`): :class:`ProjectedClassifier` ``f̃(x) = f(g(z*))``,
  ``z* = argmin ||g(z) - x||``, whose unconstrained robustness is at least ``r_in(f) / 2``;
  :func:`measure_projected` measures both (decision-based and BPDA attacks on ``f̃``) and counts
  the violations an approximate projection causes.
* Theorem 3 (:func:`transfer_bound`, :mod:`.transfer`): one perturbation of norm ``η`` fools two
  classifiers that disagree with probability ``δ`` with probability at least eq. (6) ``- 2δ``;
  :func:`measure_transfer` measures the joint-fooling rate.
* :func:`bounds_table`: the seed's table (latent, in-distribution and unconstrained robustness per
  classifier next to the theorem's upper bounds) as a :class:`BoundsTable` with provenance, the
  empirical CDFs of ``r_in`` and the bound curves.

The package, one module per concern: :mod:`.bounds` (the closed forms), :mod:`.generator` (checks
and helpers for ``g`` and the classifiers on its outputs), :mod:`.lipschitz` (the estimate of
``L``), :mod:`.latent` (the latent search), :mod:`.measure` (one classifier at ``x = g(z)``,
including the input-space search for ``r_unc``) and :mod:`.table` (the table and its records).
"""

from __future__ import annotations

from advlab.evaluation.theory.bounds import (MEDIAN_FACTOR, SQRT_HALF_PI, fawzi_bound, fawzi_bound_classwise,
                                             median_upper_bound, median_upper_bound_classwise, transfer_bound)
from advlab.evaluation.theory.generator import MARGIN_RTOL, Generator
from advlab.evaluation.theory.latent import LatentSearch, LatentSearchResult, latent_search
from advlab.evaluation.theory.lipschitz import LipschitzEstimate, lipschitz_estimate
from advlab.evaluation.theory.measure import (GenerativeRobustness, default_unconstrained_attacks,
                                              measure_robustness, pgd_radius_search)
from advlab.evaluation.theory.projected import ProjectedClassifier, ProjectedRobustness, measure_projected
from advlab.evaluation.theory.transfer import TransferRobustness, joint_search, measure_transfer
from advlab.evaluation.theory.table import BOUND_COLUMN, ROWS, BoundsTable, bounds_table

__all__ = [
    "MEDIAN_FACTOR", "ROWS", "BoundsTable", "GenerativeRobustness", "LatentSearch", "LatentSearchResult",
    "LipschitzEstimate", "bounds_table", "default_unconstrained_attacks", "fawzi_bound",
    "fawzi_bound_classwise", "latent_search", "lipschitz_estimate", "measure_robustness",
    "median_upper_bound", "median_upper_bound_classwise", "pgd_radius_search",
    "ProjectedClassifier", "ProjectedRobustness", "TransferRobustness", "joint_search", "measure_projected",
    "measure_transfer", "transfer_bound",
]
