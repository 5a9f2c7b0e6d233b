"""Score-based black-box attacks: Square Attack, SimBA and NES.

A score-based attacker sees the model's score vector (logits or probabilities) for each input it
asks about, and nothing else: every attack here takes an :class:`advlab.oracle.Oracle` built with
``output="scores"`` (a label-only oracle is refused), counts every question through the oracle's
:class:`~advlab.oracle.QuerySession`, and respects the oracle's per-point budget as well as its
own ``queries``: a point whose budget is spent stops and is reported in
``AttackResult.budget_exhausted``, never as a success.

* :class:`SquareAttack` (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L∞ and L2: random
  search over square-shaped updates, accepting a candidate only if it lowers the loss.
* :class:`SimBA` (Guo, Gardner, You, Wilson & Weinberger, ICML 2019), pixel or DCT basis: step
  ``±ε`` along random orthonormal directions, keep a step if it lowers the true-class probability.
* :class:`NES` (Ilyas, Engstrom, Athalye & Lin, ICML 2018): a natural-evolution-strategies gradient
  estimate from antithetic Gaussian samples drives projected gradient steps.

Common conventions (shared with every advlab attack):

* Each attack is a frozen dataclass of keyword-only hyperparameters; calling it as
  ``attack(oracle, x, y, *, target=None, generator=None)`` returns an
  :class:`~advlab.attacks.AttackResult` and changes nothing it was given (the inputs, the global
  RNG, the model behind the oracle). Randomness comes only from ``generator`` (a fresh generator
  seeded with 0 when ``None``), so the same seed gives the same result.
* The first query of every point is the clean input. A point the model already misclassifies
  (targeted: already assigns to ``target``) succeeds with zero perturbation after that one query.
* Success is decided on oracle answers: a point is adversarial when :func:`score_margin` of its
  answer is ``> 0`` (untargeted: the top class is not ``y``; targeted: it is ``target``). The
  returned ``success``, ``pred`` and ``confidence`` are those answers for the returned points (no
  extra query). ``confidence`` is the probability of ``pred``: the oracle's scores if they are
  probabilities (rows in ``[0, 1]`` summing to 1), else their softmax.
* The attacks work on whole batches: every query is one call with one row per active point
  (NES: ``samples`` rows per point), charged to its point through the session's index.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds`` (Square Attack and SimBA's DCT basis need images
``(B, C, H, W)``); ``y``, ``target`` ``(B,)`` int64.

Example:
    >>> from advlab.oracle import Oracle
    >>> oracle = Oracle(model, output="scores", budget=1000)
    >>> result = SquareAttack(eps=0.1)(oracle, x, y)
    >>> result.success.float().mean(), result.queries[result.success].float().mean()
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advlab.attacks._base import AttackResult
from advlab.attacks._blackbox import check_label_range, finish, prepare, score_margin
from advlab.oracle import QuerySession
from advlab.threat import ThreatModel, _view, canonical_norm, lp_norm

log = logging.getLogger(__name__)

__all__ = ["NES", "SimBA", "SquareAttack", "dct_matrix", "square_p_schedule"]

LOSSES = ("margin", "ce")


# -- validation -----------------------------------------------------------------------------------


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive(name: str, value: Any, *, allow_inf: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or value <= 0 or (math.isinf(value) and not allow_inf):
        kind = "a number > 0 (math.inf allowed)" if allow_inf else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _norm_field(config: Any, allowed: tuple[str, ...]) -> None:
    try:
        norm = canonical_norm(config.norm)
    except ValueError:
        raise ValueError(f"unknown norm {config.norm!r}: {type(config).__name__} supports "
                         f"{', '.join(allowed)}") from None
    if norm not in allowed:
        raise ValueError(f"{type(config).__name__} supports norm in {allowed}, got {config.norm!r}")
    object.__setattr__(config, "norm", norm)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: use one of {', '.join(map(repr, allowed))}")


def _bounds_field(config: Any) -> None:
    tm = ThreatModel(norm="linf", eps=math.inf, bounds=config.bounds)  # raises on bad bounds
    object.__setattr__(config, "bounds", tm.bounds)


def _need_images(name: str, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"{name} needs images of shape (B, C, H, W) with H, W >= 2, got "
                         f"shape {tuple(x.shape)}; reshape the inputs (the model may flatten them)")


# -- reading score answers ------------------------------------------------------------------------


def _are_probabilities(scores: Tensor) -> bool:
    """Whether the oracle answers probabilities (rows in [0, 1] summing to 1) rather than logits."""
    return bool(((scores >= 0) & (scores <= 1)).all()) and bool(
        ((scores.sum(dim=1) - 1).abs() <= 1e-3).all())


def _log_prob(scores: Tensor, cls: Tensor, probs: bool) -> Tensor:
    """``(k,)`` log-probability of class ``cls`` under the answers, computed without saturating.

    For logits ``log p_c = -softplus(logsumexp_{j≠c} z_j - z_c)``: it keeps resolving changes once
    ``p_c`` rounds to 1 in float32, where ``p_c`` itself (and ``log_softmax``) would not.
    """
    if probs:
        return scores.gather(1, cls[:, None]).squeeze(1).clamp_min(1e-30).log()
    own = scores.gather(1, cls[:, None]).squeeze(1)
    others = scores.scatter(1, cls[:, None], -math.inf).logsumexp(dim=1)
    return -F.softplus(others - own)


def _objective(scores: Tensor, y: Tensor, target: Tensor | None, loss: str, probs: bool) -> Tensor:
    """``(k,)`` objective the attacker *maximises*: the margin (:func:`score_margin`), or the
    cross-entropy of the true class (targeted: minus that of the target)."""
    if loss == "margin":
        return score_margin(scores, y, target)
    if target is None:
        return -_log_prob(scores, y, probs)
    return _log_prob(scores, target, probs)


def _confidence(scores: Tensor, probs: bool) -> Tensor:
    p = scores if probs else torch.softmax(scores, dim=1)
    return p.amax(dim=1)


@dataclass
class _Best:
    """Per-point record of the best point found and the oracle's answer on it."""

    x: Tensor          # (B, *)
    scores: Tensor     # (B, C)
    margin: Tensor     # (B,)
    objective: Tensor  # (B,)

    @property
    def adversarial(self) -> Tensor:
        return self.margin > 0

    def offer(self, idx: Tensor, x: Tensor, scores: Tensor, margin: Tensor, objective: Tensor) -> None:
        """Keep the offered points where they are better: adversarial beats not adversarial, then
        the higher objective (an adversarial point is only replaced by an adversarial one)."""
        adv_new, adv_old = margin > 0, self.margin[idx] > 0
        take = (adv_new & ~adv_old) | ((adv_new == adv_old) & (objective > self.objective[idx]))
        sel = idx[take]
        self.x[sel] = x[take]
        self.scores[sel] = scores[take]
        self.margin[sel] = margin[take]
        self.objective[sel] = objective[take]


def _start(config: Any, oracle: Any, x: Tensor, y: Tensor, target: Tensor | None,
           generator: torch.Generator | None, threat_norm: str, threat_eps: float, loss: str
           ) -> tuple[QuerySession, ThreatModel, torch.Generator, Tensor, bool, _Best, Tensor]:
    """Validate the call, query the clean points, and set up the per-point records.

    Returns the session, the threat model, the generator, the per-point query limit ``(B,)``
    (the smaller of the attack's ``queries`` and the oracle's budget), whether answers are
    probabilities, the best-so-far record (the clean points), and the clean answers.
    """
    oracle, session = prepare(oracle, x, y, bounds=config.bounds, target=target,
                              generator=generator, needs="scores")
    threat = ThreatModel(norm=threat_norm, eps=threat_eps, bounds=config.bounds,
                         targeted=target is not None)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    limit = session.remaining.clamp(max=config.queries).to(x.device)
    scores = session(x)                        # query 1 of every point: the clean input
    check_label_range(y, oracle.num_classes)
    if target is not None:
        check_label_range(target, oracle.num_classes, "target")
    probs = _are_probabilities(scores)
    margin = score_margin(scores, y, target)
    obj = _objective(scores, y, target, loss, probs)
    best = _Best(x=x.clone(), scores=scores.clone(), margin=margin.clone(), objective=obj.clone())
    return session, threat, generator, limit, probs, best, scores


def _result(config: Any, threat: ThreatModel, x: Tensor, best: _Best, session: QuerySession,
            target: Tensor | None, probs: bool, stopped_by_budget: Tensor) -> AttackResult:
    success = best.adversarial
    return finish(config, threat, x, best.x, session=session, success=success,
                  pred=best.scores.argmax(dim=1), confidence=_confidence(best.scores, probs).to(x.dtype),
                  target=target, exhausted=stopped_by_budget & ~success)


def _rows(t: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if t is None else t[idx]


# -- Square Attack --------------------------------------------------------------------------------

# the paper's schedule: p is halved after these iterations of a 10,000-query run
_SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_p_schedule(p_init: float, iteration: int, budget: int) -> float:
    """Fraction ``p`` of the image a Square Attack update covers at ``iteration``.

    The paper's piecewise-constant schedule (Andriushchenko et al. 2020, Sec. 3 and the reference
    code's ``p_selection``): for a 10,000-query budget ``p`` starts at ``p_init`` and is halved
    after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000; for another budget ``n``
    the iteration is first rescaled to ``int(iteration / n * 10000)``. A threshold ``t`` is passed
    once the rescaled iteration exceeds ``t`` (so at exactly 10, ``p = p_init``).
    """
    it = int(iteration / budget * 10000)
    halvings = sum(1 for t in _SQUARE_HALVINGS if it > t)
    return p_init / 2 ** halvings


def _pseudo_gaussian_rect(rows: int, cols: int) -> Tensor:
    """The reference code's ``pseudo_gaussian_pert_rectangles``: nested rectangles with weights
    ``1/(k+1)^2`` around the centre, normalised to unit L2 norm."""
    delta = torch.zeros(rows, cols, dtype=torch.float64)
    if rows == 0 or cols == 0:
        return delta
    xc, yc = rows // 2 + 1, cols // 2 + 1
    c0, c1 = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        delta[max(c0, 0):min(c0 + 2 * k + 1, rows), max(c1, 0):min(c1 + 2 * k + 1, cols)] += 1.0 / (k + 1) ** 2
        c0 -= 1
        c1 -= 1
    return delta / delta.square().sum().sqrt()


def _square_eta(s: int) -> Tensor:
    """The reference code's ``meta_pseudo_gaussian_pert(s)`` before its random transpose: two
    pseudo-Gaussian bumps of opposite sign stacked vertically, unit L2 norm, ``(s, s)`` float64."""
    eta = torch.zeros(s, s, dtype=torch.float64)
    eta[:s // 2] = _pseudo_gaussian_rect(s // 2, s)
    eta[s // 2:] = -_pseudo_gaussian_rect(s - s // 2, s)
    return eta / eta.square().sum().sqrt()


def _window_index(top: Tensor, left: Tensor, s: int, channels: int) -> tuple[Tensor, ...]:
    """Advanced-indexing tensors selecting the ``(A, C, s, s)`` square at ``(top, left)`` of each
    of ``A`` images (``top``/``left`` ``(A,)``)."""
    dev = top.device
    ar = torch.arange(s, device=dev)
    a = torch.arange(top.shape[0], device=dev)[:, None, None, None]
    c = torch.arange(channels, device=dev)[None, :, None, None]
    rows = (top[:, None] + ar)[:, None, :, None]
    cols = (left[:, None] + ar)[:, None, None, :]
    return a, c, rows, cols


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (bits * 2 - 1).to(like.dtype)


@dataclass(frozen=True, kw_only=True)
class SquareAttack:
    """Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L∞ or L2, score-based.

    "Square Attack: a query-efficient black-box adversarial attack via random search". Random
    search over the ε-ball: from an initial point on the ball's surface, each iteration changes
    one random square window of side ``s`` (the same window in every channel) and keeps the
    candidate only if it raises the objective (lowers the paper's loss):

        L∞:  δ_window ← ε · sign(u), u ~ U{-1, +1} per channel (drawn again while the window
             would not change); init: vertical stripes δ = ±ε per (channel, column)
        L2:  mass is moved from a second random window into the first one, which receives a
             pseudo-Gaussian bump of random sign (the paper's Algorithm 3); the whole δ is then
             rescaled to ‖δ‖₂ = ε; init: a 5×5 grid of bumps of side ``min(H, W) // 5``
        x_new = clip(x + δ_new);  accept if loss(x_new) < loss(x_best)

    The side is ``s = round(sqrt(p · H · W))`` with ``p`` from :func:`square_p_schedule` (the
    paper's halvings at iterations 10, 50, ..., 8000 of a 10,000-query run, rescaled to the
    budget of the run); ``s`` is clipped to ``[1, min(H, W) − 1]`` (L2: at least 3 and odd first,
    as the reference code). The loss is the margin (:func:`score_margin`, the paper's default
    and what decides success) or the cross-entropy on the scores; a candidate that turns the point
    adversarial is always kept. With ``early_stop`` a point stops at its first adversarial query
    (the paper's evaluation mode); without, it keeps raising the objective until the budget ends.

    Queries per point: 1 for the clean input, then the rest of ``min(queries, oracle budget)``
    split evenly over ``restarts`` runs (each run: 1 query for its initial point, then one per
    iteration, the schedule rescaled to the run's share); a run restarts only the points that are
    still not adversarial. Deviations from the reference code: the window position is uniform
    over all ``H − s + 1`` positions (the reference draws from ``H − s``, so never touches the
    last row and column); windows are drawn independently per image also for L2 (the reference
    shares them across the batch); a run whose objective ends below the clean point's returns the
    clean point.

    Args:
        eps: radius of the ball, in input units (required).
        norm: ``"linf"`` or ``"l2"``.
        queries: most queries per point, the clean query included.
        p_init: initial fraction of pixels a window covers, in ``(0, 1]``.
        loss: ``"margin"`` or ``"ce"``.
        restarts: number of runs (the budget is shared among them).
        early_stop: stop each point at its first adversarial answer.
        bounds: the input box.

    Example:
        >>> oracle = Oracle(model, output="scores", budget=1000)
        >>> result = SquareAttack(eps=0.1, norm="linf")(oracle, x, y, generator=torch.Generator().manual_seed(0))
        >>> result.queries[result.success].float().mean()     # queries per success
    """

    eps: float
    norm: str = "linf"
    queries: int = 5000
    p_init: float = 0.8
    loss: str = "margin"
    restarts: int = 1
    early_stop: bool = True
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _norm_field(self, ("linf", "l2"))
        _positive("eps", self.eps)
        _int_at_least("queries (per point, the clean query included)", self.queries, 1)
        ok = isinstance(self.p_init, (int, float)) and not isinstance(self.p_init, bool)
        if not ok or not (0 < self.p_init <= 1):
            raise ValueError(f"p_init must be in (0, 1] (the initial fraction of pixels a square "
                             f"covers), got {self.p_init!r}")
        _choice("loss", self.loss, LOSSES)
        _int_at_least("restarts", self.restarts, 1)
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop must be True or False, got {self.early_stop!r}")
        _bounds_field(self)

    def __call__(self, oracle: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        if isinstance(x, Tensor):
            _need_images("SquareAttack", x)
        session, threat, gen, limit, probs, best, _ = _start(
            self, oracle, x, y, target, generator, self.norm, self.eps, self.loss)
        x = x.detach()
        total = int(limit.max())
        share, extra = divmod(total - 1, self.restarts)
        for r in range(self.restarts):
            run_budget = share + (1 if r < extra else 0)
            todo = (session.queries.to(x.device) < limit)
            if self.early_stop:
                todo &= ~best.adversarial
            if run_budget < 1 or not bool(todo.any()):
                continue
            idx = todo.nonzero().squeeze(1)
            self._run(session, threat, x, y, target, idx, limit, run_budget, gen, probs, best)
        stopped = session.queries.to(x.device) >= limit
        return _result(self, threat, x, best, session, target, probs, stopped)

    # one run of the random search on the points ``idx``
    def _run(self, session: QuerySession, threat: ThreatModel, x_all: Tensor, y_all: Tensor,
             target_all: Tensor | None, idx: Tensor, limit: Tensor, budget: int,
             gen: torch.Generator, probs: bool, best: _Best) -> None:
        x, y, target = x_all[idx], y_all[idx], _rows(target_all, idx)
        k, c, h, w = x.shape
        lo, hi = threat.bounds
        eps = self.eps
        if self.norm == "linf":
            init = eps * _random_signs((k, c, 1, w), gen, x)                      # vertical stripes
            x_cur = threat.project(x + init, x)
        else:
            x_cur = threat.project(self._l2_init(x, gen), x)
        scores = session(x_cur, idx)
        margin = score_margin(scores, y, target)
        obj = _objective(scores, y, target, self.loss, probs)
        n_features = c * h * w
        side_max = min(h, w) - 1
        for it in range(budget - 1):
            active = session.queries[idx].to(x.device) < limit[idx]
            if self.early_stop:
                active &= margin <= 0
            if not bool(active.any()):
                break
            a = active.nonzero().squeeze(1)
            p = square_p_schedule(self.p_init, it, budget)
            s = int(round(math.sqrt(p * n_features / c)))
            if self.norm == "linf":
                s = min(max(s, 1), side_max)
                cand = self._linf_candidate(x[a], x_cur[a], s, gen, lo, hi)
            else:
                s = max(s, 3)
                s += 1 - s % 2
                s = min(max(s, 1), side_max)
                cand = self._l2_candidate(x[a], x_cur[a], s, gen)
            cand = threat.project(cand, x[a])
            ans = session(cand, idx[a])
            m_new = score_margin(ans, y[a], _rows(target, a))
            o_new = _objective(ans, y[a], _rows(target, a), self.loss, probs)
            adv_new, adv_old = m_new > 0, margin[a] > 0
            take = ((o_new > obj[a]) & (adv_new | ~adv_old)) | (adv_new & ~adv_old)
            sel = a[take]
            x_cur[sel] = cand[take]
            scores[sel] = ans[take]
            margin[sel] = m_new[take]
            obj[sel] = o_new[take]
            if it % 100 == 0:
                log.debug("square %s iteration %d: p=%.4g s=%d, %d active, %d adversarial",
                          self.norm, it, p, s, a.numel(), int((margin > 0).sum()))
        best.offer(idx, x_cur, scores, margin, obj)

    def _linf_candidate(self, x: Tensor, x_cur: Tensor, s: int, gen: torch.Generator,
                        lo: float, hi: float) -> Tensor:
        a, c, h, w = x.shape
        top = torch.randint(0, h - s + 1, (a,), generator=gen, device=x.device)
        left = torch.randint(0, w - s + 1, (a,), generator=gen, device=x.device)
        win = _window_index(top, left, s, c)
        x_win, cur_win = x[win], x_cur[win]                                  # (A, C, s, s)
        signs = _random_signs((a, c, 1, 1), gen, x)
        # draw again where the new window would equal the current one (the reference's while loop)
        for _ in range(100):
            same = ((torch.clamp(x_win + self.eps * signs, lo, hi) - cur_win).abs() < 1e-7).flatten(1).all(1)
            if not bool(same.any()):
                break
            signs = torch.where(_view(same, signs), _random_signs((a, c, 1, 1), gen, x), signs)
        delta = x_cur - x
        delta[win] = (self.eps * signs).expand(a, c, s, s)
        return x + delta

    def _l2_candidate(self, x: Tensor, x_cur: Tensor, s: int, gen: torch.Generator) -> Tensor:
        a, c, h, w = x.shape
        eps = self.eps
        dev = x.device
        delta = x_cur - x                                                    # (A, C, H, W)
        top1 = torch.randint(0, h - s + 1, (a,), generator=gen, device=dev)
        left1 = torch.randint(0, w - s + 1, (a,), generator=gen, device=dev)
        top2 = torch.randint(0, h - s + 1, (a,), generator=gen, device=dev)
        left2 = torch.randint(0, w - s + 1, (a,), generator=gen, device=dev)
        win1 = _window_index(top1, left1, s, c)
        win2 = _window_index(top2, left2, s, c)
        old1 = delta[win1]                                                   # (A, C, s, s)
        norm_win1 = old1.square().sum(dim=(2, 3), keepdim=True).sqrt()       # (A, C, 1, 1)
        norm_img = _view(lp_norm(delta, "l2"), delta)                        # (A, 1, 1, 1)
        mask = torch.zeros(a, 1, h, w, dtype=torch.bool, device=dev)
        mask[win1[0], 0, win1[2], win1[3]] = True
        mask[win2[0], 0, win2[2], win2[3]] = True
        norm_windows = (delta * mask).square().sum(dim=(2, 3), keepdim=True).sqrt()
        eta = _square_eta(s).to(device=dev, dtype=x.dtype)
        flip = torch.rand(a, generator=gen, device=dev) > 0.5
        bumps = torch.where(flip[:, None, None, None], eta.t(), eta)        # (A, 1, s, s)
        new = bumps * _random_signs((a, c, 1, 1), gen, x) + old1 / (1e-12 + norm_win1)
        scale = ((eps ** 2 - norm_img.square()).clamp_min(0) / c + norm_windows.square()).sqrt()
        new = new / (1e-12 + new.square().sum(dim=(2, 3), keepdim=True).sqrt()) * scale
        delta[win2] = 0.0
        delta[win1] = new
        total = _view(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return x + delta / total * eps

    def _l2_init(self, x: Tensor, gen: torch.Generator) -> Tensor:
        k, c, h, w = x.shape
        s = max(min(h, w) // 5, 1)
        start = max((min(h, w) - 5 * s) // 2, 0)
        eta = _square_eta(s).to(device=x.device, dtype=x.dtype)
        delta = torch.zeros_like(x)
        for i in range(h // s):
            r0 = start + i * s
            for j in range(w // s):
                c0 = start + j * s
                r1, c1 = min(r0 + s, h), min(c0 + s, w)
                if r0 >= h or c0 >= w:
                    continue
                bump = eta.t() if bool(torch.rand(1, generator=gen, device=x.device) > 0.5) else eta
                delta[:, :, r0:r1, c0:c1] += bump[:r1 - r0, :c1 - c0] * _random_signs((k, c, 1, 1), gen, x)
        total = _view(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return x + delta / total * self.eps


# -- SimBA ----------------------------------------------------------------------------------------


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The orthonormal DCT-II matrix ``D`` ``(n, n)``: row ``k`` is the ``k``-th basis vector,
    ``D[k, i] = a_k cos(π (2i + 1) k / (2n))`` with ``a_0 = sqrt(1/n)``, ``a_k = sqrt(2/n)``.

    ``D @ D.T = I``; the 2-D basis image of frequency ``(u, v)`` is ``outer(D_H[u], D_W[v])``.
    """
    _int_at_least("n", n, 1)
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


@dataclass(frozen=True, kw_only=True)
class SimBA:
    """SimBA, Simple Black-box Attack (Guo, Gardner, You, Wilson & Weinberger, ICML 2019).

    "Simple Black-box Adversarial Attacks". Each iteration takes the next direction ``q`` of a
    random orthonormal basis (without replacement) and tries ``x − εq``, then, if that did not
    help, ``x + εq``, keeping the first that lowers the probability of the true class (targeted:
    raises the probability of ``target``):

        δ ← δ − εq  if p_y(x + δ − εq) < p_y(x + δ),  else  δ + εq  if p_y(x + δ + εq) < p_y(x + δ)

    Basis ``"pixel"``: the standard basis (one pixel of one channel). Basis ``"dct"``: the 2-D
    orthonormal DCT-II basis of each channel (:func:`dct_matrix`), low frequencies first as in the
    paper: with ``order="strided"`` (the paper's SimBA-DCT) the frequencies ``(u, v)`` with
    ``max(u, v) < freq_dims`` come first in random order, then each further band of ``stride``
    frequencies in random order; ``order="random"`` uses only the ``freq_dims × freq_dims`` lowest
    frequencies (the paper's ``order='rand'``). Defaults follow the paper's ImageNet settings
    relative to the image side: ``freq_dims = max(1, min(H, W) // 8)``, ``stride = max(1,
    min(H, W) // 32)``. Probabilities are compared in log space (computed stably from logits, so
    a probability that rounds to 1 still ranks); the result is the same ordering.

    Threat model (an advlab addition: the paper's SimBA has no ε-ball, only the step ``eps``, and
    its perturbation grows as ``eps · sqrt(#accepted steps)`` in L2): ``norm`` and ``max_norm``.
    Every queried and returned point is ``ThreatModel(norm, max_norm, bounds).project(x + δ, x)``,
    so with the default ``max_norm = inf`` it is SimBA with the box clip (a minimal-style attack
    whose ``norms`` report how far it went) and with a finite ``max_norm`` the points stay inside
    that ball. The search state ``δ`` itself is not projected, as the paper keeps its DCT
    coefficients unclipped and clips only the queried image.

    Queries per point: 1 for the clean input, then 1 or 2 per direction, at most
    ``min(queries, oracle budget)``; a point stops at its first adversarial answer. Once every
    direction of the order has been tried (possible on small images) a new random order is drawn
    and the search continues (the paper's ImageNet runs never exhaust their 150k directions).

    Args:
        eps: step length along a basis vector (each direction has unit L2 norm).
        basis: ``"dct"`` or ``"pixel"``.
        queries: most queries per point, the clean query included.
        norm: ``"l2"`` or ``"linf"``, the norm of the threat model (and of the reported ``norms``).
        max_norm: radius of that ball, ``math.inf`` for none.
        freq_dims, stride, order: the DCT ordering (ignored for the pixel basis).
        bounds: the input box.

    Example:
        >>> result = SimBA(basis="dct", eps=0.2, queries=2000)(Oracle(model, output="scores"), x, y)
        >>> result.norms[result.success]          # L2 distances found
    """

    eps: float = 0.2
    basis: str = "dct"
    queries: int = 10000
    norm: str = "l2"
    max_norm: float = math.inf
    freq_dims: int | None = None
    stride: int | None = None
    order: str = "strided"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _positive("eps (the step along a basis direction)", self.eps)
        _choice("basis", self.basis, ("dct", "pixel"))
        _int_at_least("queries (per point, the clean query included)", self.queries, 1)
        _norm_field(self, ("l2", "linf"))
        _positive("max_norm", self.max_norm, allow_inf=True)
        if self.freq_dims is not None:
            _int_at_least("freq_dims", self.freq_dims, 1)
        if self.stride is not None:
            _int_at_least("stride", self.stride, 1)
        _choice("order", self.order, ("strided", "random"))
        _bounds_field(self)

    def __call__(self, oracle: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        if isinstance(x, Tensor) and self.basis == "dct":
            _need_images("SimBA with the DCT basis", x)
        session, threat, gen, limit, probs, best, scores = _start(
            self, oracle, x, y, target, generator, self.norm, float(self.max_norm), "margin")
        x = x.detach()
        b = x.shape[0]
        dev = x.device
        cls = target if target is not None else y
        sign = 1.0 if target is not None else -1.0          # maximise sign * log p_cls
        crit = sign * _log_prob(scores, cls, probs)          # (B,)
        delta = torch.zeros_like(x)
        cur_scores = scores.clone()
        if self.basis == "dct":
            _, c, h, w = x.shape
            d_h = dct_matrix(h, dtype=x.dtype, device=dev)
            d_w = dct_matrix(w, dtype=x.dtype, device=dev)
        order = torch.empty(0)
        it = 0
        while True:
            spent = session.queries.to(dev)
            active = (spent < limit) & (score_margin(cur_scores, y, target) <= 0)
            if not bool(active.any()):
                break
            a = active.nonzero().squeeze(1)
            pos = it % max(order.shape[-1], 1)
            if pos == 0:
                order = self._order(x, b, gen)                # (B, n_dirs), a fresh random order
            q = self._direction(order[a, pos], x, d_h if self.basis == "dct" else None,
                                d_w if self.basis == "dct" else None)          # (A, *)
            xa, ta = x[a], _rows(target, a)
            improved = torch.zeros(a.numel(), dtype=torch.bool, device=dev)
            for step in (-self.eps, self.eps):              # x − εq first, then x + εq
                ask = ~improved & (session.queries[a].to(dev) < limit[a])
                if not bool(ask.any()):
                    break
                r = ask.nonzero().squeeze(1)
                trial = delta[a[r]] + step * q[r]
                ans = session(threat.project(xa[r] + trial, xa[r]), a[r])
                new_crit = sign * _log_prob(ans, cls[a[r]], probs)
                ok = new_crit > crit[a[r]]
                sel = a[r][ok]
                delta[sel] = trial[ok]
                crit[sel] = new_crit[ok]
                cur_scores[sel] = ans[ok]
                improved[r[ok]] = True
            it += 1
            if it % 500 == 0:
                log.debug("simba iteration %d: %d active", it, a.numel())
        # SimBA returns where its search ended (the clean point for points it never moved)
        best.x = threat.project(x + delta, x)
        best.scores = cur_scores
        best.margin = score_margin(cur_scores, y, target)
        stopped = session.queries.to(dev) >= limit
        return _result(self, threat, x, best, session, target, probs, stopped)

    def _order(self, x: Tensor, b: int, gen: torch.Generator) -> Tensor:
        """``(B, n_dirs)`` int64 direction numbers (flat indices into ``(C, H, W)``), a random order
        per point; for the DCT basis the index is a frequency ``(c, u, v)``, low bands first."""
        dev = x.device
        if self.basis == "pixel":
            n = x[0].numel()
            return torch.rand(b, n, generator=gen, device=dev).argsort(dim=1)
        _, c, h, w = x.shape
        side = min(h, w)
        freq = min(self.freq_dims if self.freq_dims is not None else max(1, side // 8), max(h, w))
        stride = self.stride if self.stride is not None else max(1, side // 32)
        u = torch.arange(h, device=dev)[:, None].expand(h, w)
        v = torch.arange(w, device=dev)[None, :].expand(h, w)
        band = torch.maximum(u, v)
        group = torch.where(band < freq, torch.zeros_like(band), 1 + (band - freq) // stride)
        group = group.expand(c, h, w).reshape(-1).to(x.dtype)                 # (C*H*W,)
        if self.order == "random":
            keep = (group == 0).nonzero().squeeze(1)
            keys = torch.rand(b, keep.numel(), generator=gen, device=dev)
            return keep[keys.argsort(dim=1)]
        keys = group[None, :] + torch.rand(b, group.numel(), generator=gen, device=dev, dtype=x.dtype) * 0.5
        return keys.argsort(dim=1)

    def _direction(self, d: Tensor, x: Tensor, d_h: Tensor | None, d_w: Tensor | None) -> Tensor:
        """The unit basis vectors ``(A, *)`` numbered ``d`` ``(A,)``."""
        a = d.shape[0]
        if self.basis == "pixel":
            q = torch.zeros(a, x[0].numel(), dtype=x.dtype, device=x.device)
            q.scatter_(1, d[:, None], 1.0)
            return q.view(a, *x.shape[1:])
        assert d_h is not None and d_w is not None
        _, c, h, w = x.shape
        ch, rem = d // (h * w), d % (h * w)
        u, v = rem // w, rem % w
        q = torch.zeros(a, c, h, w, dtype=x.dtype, device=x.device)
        q[torch.arange(a, device=x.device), ch] = d_h[u][:, :, None] * d_w[v][:, None, :]
        return q


# -- NES ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NES:
    """NES gradient estimation with projected steps (Ilyas, Engstrom, Athalye & Lin, ICML 2018).

    "Black-box Adversarial Attacks with Limited Queries and Information", the query-limited
    setting. The gradient of the objective ``L`` (margin or cross-entropy on the scores, to
    maximise) at the current point is estimated from ``samples`` queries with antithetic Gaussian
    sampling (``samples / 2`` pairs ``±u_i``, ``u_i ~ N(0, I)``), and drives a PGD step projected
    onto the threat model:

        g = 1 / (σ · samples) · Σ_i u_i (L(x_t + σu_i) − L(x_t − σu_i))
        x_{t+1} = Π_{ε-ball ∩ box}(x_t + step_size · dir(g)),  dir = sign (L∞) or g/‖g‖₂ (L2)

    The sample points ``x_t ± σu_i`` are clipped to the box (the model's domain). After each step
    the new point is queried once (its answer decides success and is the one reported), so a step
    costs ``samples + 1`` queries per point, after the clean query; a point stops when it is
    adversarial, after ``steps`` steps, or when fewer than ``samples + 1`` queries are left (then it
    is reported as budget-exhausted). The returned point is the first adversarial iterate, else
    the iterate with the highest margin. ``steps=None`` runs as many steps as the query budget
    allows. Paper defaults (ImageNet, L∞ ε = 0.05): σ = 0.001, 50 samples, learning rate 0.01,
    hence ``step_size = eps / 5`` by default. The paper's plain NES step is used (no momentum).

    Args:
        eps: radius of the ball (required).
        norm: ``"linf"`` or ``"l2"``.
        steps: most PGD steps, or ``None`` for as many as ``queries`` allows.
        step_size: PGD step length, ``None`` for ``eps / 5``.
        samples: queries per gradient estimate, even (antithetic pairs).
        sigma: standard deviation of the search distribution, in input units.
        queries: most queries per point, the clean query included.
        loss: ``"margin"`` or ``"ce"``.
        bounds: the input box.

    Example:
        >>> result = NES(eps=0.05, samples=50, queries=10000)(Oracle(model, output="scores"), x, y)
        >>> result.queries            # (B,) samples + 1 per step, plus the clean query
    """

    eps: float
    norm: str = "linf"
    steps: int | None = None
    step_size: float | None = None
    samples: int = 50
    sigma: float = 0.001
    queries: int = 10000
    loss: str = "margin"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _norm_field(self, ("linf", "l2"))
        _positive("eps", self.eps)
        if self.steps is not None:
            _int_at_least("steps", self.steps, 1)
        if self.step_size is not None:
            _positive("step_size", self.step_size)
        _int_at_least("samples", self.samples, 2)
        if self.samples % 2:
            raise ValueError(f"samples must be even (antithetic pairs ±u), got {self.samples!r}")
        _positive("sigma", self.sigma)
        _int_at_least("queries (per point, the clean query included)", self.queries, 1)
        _choice("loss", self.loss, LOSSES)
        _bounds_field(self)

    def __call__(self, oracle: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        session, threat, gen, limit, probs, best, scores = _start(
            self, oracle, x, y, target, generator, self.norm, self.eps, self.loss)
        best.objective = best.margin.clone()         # NES returns the iterate with the best margin
        x = x.detach()
        b = x.shape[0]
        dev = x.device
        lo, hi = threat.bounds
        half = self.samples // 2
        step_size = self.step_size if self.step_size is not None else self.eps / 5
        steps = self.steps if self.steps is not None else math.inf
        cost = self.samples + 1
        x_cur = x.clone()
        done = best.adversarial.clone()
        taken = torch.zeros(b, dtype=torch.long, device=dev)
        out_of_budget = torch.zeros(b, dtype=torch.bool, device=dev)
        while True:
            left = limit - session.queries.to(dev)
            can = left >= cost
            want = ~done & (taken < steps)
            out_of_budget |= want & ~can
            active = want & can
            if not bool(active.any()):
                break
            a = active.nonzero().squeeze(1)
            k = a.numel()
            xa, ya, ta = x_cur[a], y[a], _rows(target, a)
            u = torch.randn((k, half, *x.shape[1:]), generator=gen, device=dev, dtype=x.dtype)
            probe = torch.cat([xa[:, None] + self.sigma * u, xa[:, None] - self.sigma * u], dim=1)
            probe = probe.clamp(lo, hi).reshape(k * self.samples, *x.shape[1:])
            owner = a.repeat_interleave(self.samples)
            rows = torch.arange(k, device=dev).repeat_interleave(self.samples)
            ans = session(probe, owner)
            obj = _objective(ans, ya[rows], _rows(ta, rows), self.loss, probs).view(k, self.samples)
            diff = obj[:, :half] - obj[:, half:]                               # (A, samples/2)
            grad = (diff.view(k, half, *([1] * (x.dim() - 1))) * u).sum(dim=1)
            grad = grad / (self.sigma * self.samples)                           # (A, *)
            x_new = threat.project(xa + step_size * threat.ascent_direction(grad), x[a])
            ans_new = session(x_new, a)
            x_cur[a] = x_new
            taken[a] += 1
            m_new = score_margin(ans_new, ya, ta)
            best.offer(a, x_new, ans_new, m_new, m_new)
            done[a] |= m_new > 0
            log.debug("nes step %d: %d active, %d adversarial", int(taken.max()), k,
                      int(best.adversarial.sum()))
        return _result(self, threat, x, best, session, target, probs, out_of_budget)
