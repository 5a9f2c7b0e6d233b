"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L∞ and L2, score-based.

Random search over square-shaped updates of the ε-ball, accepting a candidate only if it raises
the objective. Takes an :class:`advlab.oracle.Oracle` answering scores; see
:mod:`advlab.attacks.score` for the conventions every score-based attack shares.

Example:
    >>> oracle = Oracle(model, output="scores", budget=1000)
    >>> result = SquareAttack(eps=0.1)(oracle, x, y)
    >>> result.success.float().mean(), result.queries[result.success].float().mean()
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from advlab._checks import bounds_field, check_int, check_number, norm_field
from advlab.attacks._blackbox import budget_alias
from advlab.attacks._score import Best, hand_over, loss_field, rows, score_objective, start
from advlab.attacks.contract import Attack, Run
from advlab.threat import _view, lp_norm

log = logging.getLogger(__name__)

__all__ = ["SquareAttack", "square_p_schedule"]

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


def _pseudo_gaussian_1d(n: int) -> Tensor:
    """The 1-D form of :func:`_pseudo_gaussian_rect`: nested intervals with weights ``1/(k+1)^2``
    around the centre, unit L2 norm, ``(n,)`` float64."""
    delta = torch.zeros(n, dtype=torch.float64)
    if n == 0:
        return delta
    c0 = n // 2
    for k in range(c0 + 1):
        delta[max(c0 - k, 0):min(c0 + k + 1, n)] += 1.0 / (k + 1) ** 2
    return delta / delta.square().sum().sqrt()


def _square_eta_1d(s: int) -> Tensor:
    """The 1-D form of :func:`_square_eta`: a positive bump then a negative one, unit L2 norm,
    ``(s,)`` float64."""
    eta = torch.zeros(s, dtype=torch.float64)
    eta[:s // 2] = _pseudo_gaussian_1d(s // 2)
    eta[s // 2:] = -_pseudo_gaussian_1d(s - s // 2)
    return eta / eta.square().sum().sqrt()


def layout_of(x: Tensor) -> str:
    """``"image"`` ``(B, C, H, W)``, ``"signal"`` ``(B, C, T)`` or ``"tabular"`` ``(B, D)``; other
    shapes are refused with a message."""
    if x.dim() == 4 and x.shape[2] >= 2 and x.shape[3] >= 2:
        return "image"
    if x.dim() == 3 and x.shape[2] >= 2:
        return "signal"
    if x.dim() == 2 and x.shape[1] >= 2:
        return "tabular"
    raise ValueError(f"SquareAttack needs images (B, C, H, W) with H, W >= 2, signals (B, C, T) with "
                     f"T >= 2 or tabular inputs (B, D) with D >= 2, got shape {tuple(x.shape)}; "
                     "reshape the inputs (the model may flatten them)")


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


_DRAWS = 8  # sign vectors drawn at once by the 1-D L∞ candidate


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (bits * 2 - 1).to(like.dtype)


@budget_alias
@dataclass(frozen=True, kw_only=True)
class SquareAttack(Attack):
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
    as the reference code). The loss is the C&W margin ``"cw"`` (:func:`advlab.losses.cw_margin`,
    the paper's default; ``"margin"`` is its deprecated name) or the cross-entropy on the scores;
    a candidate that turns the point adversarial (by the call's criterion) is always kept. With ``early_stop`` a point stops at its first adversarial query
    (the paper's evaluation mode); without, it keeps raising the objective until the budget ends.

    Signals ``(B, C, T)`` and tabular inputs ``(B, D)`` (an advlab extension): the square window
    becomes a 1-D one of ``s = round(p · T)`` positions: an interval of the time axis, the same
    in every channel, for a signal (L∞: one sign per channel over it; init: ``±ε`` per feature);
    ``s`` distinct features drawn uniformly from the free ones for a tabular input, whose feature
    order means nothing (L∞: one sign per feature). L2 uses 1-D pseudo-Gaussian bumps and five of
    them side by side as the start. Images ``(B, C, H, W)`` run exactly as before. With a
    threat-model ``mask`` the windows of a tabular input are drawn among free features only, and
    every L2 rescaling spends ε on the free features.

    Queries per point: 1 for the clean input, then the rest of ``min(budget, oracle budget)``
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
        budget: most queries per point, the clean query included (``queries=`` is its
            deprecated name).
        p_init: initial fraction of pixels a window covers, in ``(0, 1]``.
        loss: ``"cw"`` (the C&W margin) or ``"ce"``.
        restarts: number of runs (the budget is shared among them).
        early_stop: stop each point at its first adversarial answer.
        bounds: the input box.

    Example:
        >>> oracle = Oracle(model, output="scores", budget=1000)
        >>> result = SquareAttack(eps=0.1, norm="linf")(oracle, x, y, generator=torch.Generator().manual_seed(0))
        >>> result.queries[result.success].float().mean()     # queries per success
    """

    access: ClassVar[str] = "scores"
    kind: ClassVar[str] = "bounded"

    eps: float
    norm: str = "linf"
    budget: int = 5000
    p_init: float = 0.8
    loss: str = "cw"
    restarts: int = 1
    early_stop: bool = True
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        norm_field(self, ("linf", "l2"))
        check_number("eps", self.eps)
        check_int("budget (queries per point, the clean query included)", self.budget)
        ok = isinstance(self.p_init, (int, float)) and not isinstance(self.p_init, bool)
        if not ok or not (0 < self.p_init <= 1):
            raise ValueError(f"p_init must be in (0, 1] (the initial fraction of pixels a square "
                             f"covers), got {self.p_init!r}")
        loss_field(self)
        check_int("restarts", self.restarts)
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop must be True or False, got {self.early_stop!r}")
        bounds_field(self)

    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        layout_of(x)

    def _core(self, run: Run) -> None:
        limit, best, _ = start(run, self.budget, self.loss)
        session, x = run.session, run.x
        total = int(limit.max())
        share, extra = divmod(total - 1, self.restarts)
        for r in range(self.restarts):
            run_budget = share + (1 if r < extra else 0)
            todo = (session.queries.to(x.device) < limit)
            if self.early_stop:
                todo &= ~best.adv
            if run_budget < 1 or not bool(todo.any()):
                continue
            self._search(run, todo.nonzero().squeeze(1), limit, run_budget, best)
        hand_over(run, best, session.queries.to(x.device) >= limit)

    def _search(self, run: Run, idx: Tensor, limit: Tensor, budget: int, best: Best) -> None:
        """One run of the random search on the points ``idx``, spending at most ``budget``
        queries on each."""
        session, threat, gen, probs = run.session, run.threat, run.generator, run.probabilities
        x, y, target = run.x[idx], run.y[idx], rows(run.target, idx)
        layout = layout_of(x)
        lo, hi = threat.box(x)
        free = threat.free(x)
        eps = self.eps
        if layout == "image":
            k, c, h, w = x.shape
            if self.norm == "linf":
                init = eps * _random_signs((k, c, 1, w), gen, x)                  # vertical stripes
                x_cur = threat.project(x + init, x)
            else:
                x_cur = threat.project(self._l2_init(x, gen, free), x)
            n_features = c * h * w
            side_max = min(h, w) - 1
        else:
            # 1-D windows: intervals of T (the same in every channel) for a signal, random subsets
            # of the free features for a tabular input
            if self.norm == "linf":
                x_cur = threat.project(x + eps * _random_signs(tuple(x.shape), gen, x), x)
            else:
                x_cur = threat.project(self._l2_init_1d(x, gen, threat), x)
            n_pos = x.shape[-1] if layout == "signal" else threat.num_free(x)
        scores = session(x_cur, idx)
        adv = run.adversarial(scores, idx)
        obj = score_objective(scores, y, target, self.loss, probs)
        # L∞ on 1-D windows: the two values each coordinate can take, ±ε projected into the ball,
        # the box and the mask once, instead of projecting every candidate
        fast_1d = layout != "image" and self.norm == "linf"
        up = threat.project(x + eps, x) if fast_1d else None
        down = threat.project(x - eps, x) if fast_1d else None
        # The search runs on a compacted working set: the points still active, gathered once each
        # time the set changes (a point succeeds under early_stop, or spends its queries), not at
        # every iteration; a point's queries left are known, since it spends one per iteration.
        left = (limit[idx] - session.queries[idx].to(x.device)).tolist()
        ends = {int(v) for v in left}
        a = None
        for it in range(budget - 1):
            if a is None or it in ends:
                if a is not None:  # write the working set back before it changes
                    x_cur[a], scores[a], adv[a], obj[a] = cur_a, scores_a, adv_a, obj_a
                active = session.queries[idx].to(x.device) < limit[idx]
                if self.early_stop:
                    active &= ~adv
                if not bool(active.any()):
                    a = None
                    break
                a = active.nonzero().squeeze(1)
                x_a, cur_a, scores_a, adv_a, obj_a = x[a], x_cur[a], scores[a], adv[a], obj[a]
                y_a, t_a, idx_a = y[a], rows(target, a), idx[a]
                if fast_1d:
                    up_a, down_a = up[a], down[a]  # type: ignore[index]
            p = square_p_schedule(self.p_init, it, budget)
            if layout != "image":
                s = min(max(int(round(p * n_pos)), 1), max(n_pos - 1, 1))
                pos = self._positions(x_a, s, gen, layout, free)
                if fast_1d:
                    cand = self._linf_candidate_1d(x_a, cur_a, pos, gen, layout, up_a, down_a)
                else:
                    cand = threat.project(self._candidate_1d(x_a, cur_a, pos, gen, lo, hi, layout, threat), x_a)
            elif self.norm == "linf":
                s = int(round(math.sqrt(p * n_features / c)))
                s = min(max(s, 1), side_max)
                cand = threat.project(self._linf_candidate(x_a, cur_a, s, gen, lo, hi), x_a)
            else:
                s = int(round(math.sqrt(p * n_features / c)))
                s = max(s, 3)
                s += 1 - s % 2
                s = min(max(s, 1), side_max)
                cand = threat.project(self._l2_candidate(x_a, cur_a, s, gen, free), x_a)
            ans = session(cand, idx_a)
            adv_new = run.adversarial(ans, idx_a)
            o_new = score_objective(ans, y_a, t_a, self.loss, probs)
            newly = adv_new & ~adv_a
            take = ((o_new > obj_a) & (adv_new | ~adv_a)) | newly
            cur_a[take] = cand[take]
            scores_a[take] = ans[take]
            obj_a[take] = o_new[take]
            adv_a |= newly
            if self.early_stop and bool(newly.any()):
                x_cur[a], scores[a], adv[a], obj[a] = cur_a, scores_a, adv_a, obj_a
                a = None  # regather: the points just broken are done
            if it % 100 == 0 and log.isEnabledFor(logging.DEBUG):
                log.debug("square %s iteration %d: p=%.4g s=%d, %d active, %d adversarial among them",
                          self.norm, it, p, s, int(adv_a.numel()), int(adv_a.sum()))
        if a is not None:
            x_cur[a], scores[a], adv[a], obj[a] = cur_a, scores_a, adv_a, obj_a
        best.offer(idx, x_cur, scores, adv, obj)

    def _linf_candidate(self, x: Tensor, x_cur: Tensor, s: int, gen: torch.Generator,
                        lo: float | Tensor, hi: float | Tensor) -> Tensor:
        a, c, h, w = x.shape
        top = torch.randint(0, h - s + 1, (a,), generator=gen, device=x.device)
        left = torch.randint(0, w - s + 1, (a,), generator=gen, device=x.device)
        win = _window_index(top, left, s, c)
        x_win, cur_win = x[win], x_cur[win]                                  # (A, C, s, s)
        signs = _random_signs((a, c, 1, 1), gen, x)
        # draw again where the new window would equal the current one (the reference's while loop)
        if isinstance(lo, Tensor):  # per-feature bounds, at the window
            lo, hi = lo.expand_as(x)[win], hi.expand_as(x)[win]
        for _ in range(100):
            same = ((torch.clamp(x_win + self.eps * signs, min=lo, max=hi) - cur_win).abs() < 1e-7).flatten(1).all(1)
            if not bool(same.any()):
                break
            signs = torch.where(_view(same, signs), _random_signs((a, c, 1, 1), gen, x), signs)
        delta = x_cur - x
        delta[win] = (self.eps * signs).expand(a, c, s, s)
        return x + delta

    def _l2_candidate(self, x: Tensor, x_cur: Tensor, s: int, gen: torch.Generator,
                      free: Tensor | None = None) -> Tensor:
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
        if free is not None:  # the ball of the free features: rescale what can move
            delta = delta * free
        total = _view(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return x + delta / total * eps

    def _l2_init(self, x: Tensor, gen: torch.Generator, free: Tensor | None = None) -> Tensor:
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
        if free is not None:
            delta = delta * free
        total = _view(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return x + delta / total * self.eps

    # -- 1-D windows: signals (B, C, T) and tabular inputs (B, D) ----------------------------------

    @staticmethod
    def _positions(x: Tensor, s: int, gen: torch.Generator, layout: str,
                   free: Tensor | None) -> Tensor:
        """``(A, s)`` positions along the last axis: an interval of length ``s`` at a uniform
        start (signals), or ``s`` distinct free features drawn uniformly (tabular)."""
        a, length, dev = x.shape[0], x.shape[-1], x.device
        if layout == "signal":
            start = torch.randint(0, length - s + 1, (a,), generator=gen, device=dev)
            return start[:, None] + torch.arange(s, device=dev)[None, :]
        keys = torch.rand(a, length, generator=gen, device=dev)
        if free is not None:
            keys = keys + (~free).to(keys.dtype)[None, :] * 2  # frozen features sort last
        return keys.argsort(dim=1)[:, :s]

    def _linf_candidate_1d(self, x: Tensor, x_cur: Tensor, pos: Tensor, gen: torch.Generator, layout: str,
                           up: Tensor, down: Tensor) -> Tensor:
        """The L∞ candidate on the windows ``pos`` of 1-D inputs, already feasible: each window
        entry takes ``up`` or ``down`` (``x ± ε`` projected into the ball, the box and the mask)
        by its sign, drawn again while the window would not change."""
        shape = x.shape
        a, s, dev = x.shape[0], pos.shape[1], x.device
        length = shape[-1]
        cur3 = x_cur.reshape(a, -1, length)
        c = cur3.shape[1]
        win = (torch.arange(a, device=dev)[:, None, None], torch.arange(c, device=dev)[None, :, None],
               pos[:, None, :])                                                  # (A, C, s)
        up_win, down_win, cur_win = up.reshape(a, c, length)[win], down.reshape(a, c, length)[win], cur3[win]
        keep_up = (up_win - cur_win).abs() < 1e-7
        keep_down = (down_win - cur_win).abs() < 1e-7
        sign_shape = (a, c, 1) if layout == "signal" else (a, 1, s)
        # The reference redraws the signs while the window would not change (rejection sampling).
        # The same distribution, drawn 8 at a time: each row takes its first draw that changes
        # its window; the rare row none of the 8 changes draws on, one at a time as before.
        draws = _random_signs((_DRAWS, *sign_shape), gen, x)                   # (K, A, ., .)
        changes = ~torch.where(draws > 0, keep_up, keep_down).flatten(2).all(2)  # (K, A)
        signs = draws[changes.to(torch.uint8).argmax(0), torch.arange(a, device=dev)]
        same = ~changes.any(0)
        for _ in range(100):
            if not bool(same.any()):
                break
            signs = torch.where(_view(same, signs), _random_signs(sign_shape, gen, x), signs)
            same = torch.where(signs > 0, keep_up, keep_down).flatten(1).all(1)
        cand = cur3.clone()
        cand[win] = torch.where(signs > 0, up_win, down_win)
        return cand.reshape(shape)

    def _candidate_1d(self, x: Tensor, x_cur: Tensor, pos: Tensor, gen: torch.Generator,
                      lo: float | Tensor, hi: float | Tensor, layout: str, threat: Any) -> Tensor:
        """One candidate on the windows ``pos`` ``(A, s)`` of ``(A, C, T)`` signals or ``(A, D)``
        tabular rows. L∞: ``δ_window = ε · sign`` (one sign per channel over a signal's interval,
        one per feature of a tabular subset), drawn again while it would change nothing. L2: the
        image rule with 1-D bumps (:func:`_square_eta_1d`): mass from a second window moves into
        the first, then ``δ`` is rescaled to ``‖δ‖₂ = ε`` over the free features."""
        shape = x.shape
        a, s, dev = x.shape[0], pos.shape[1], x.device
        x3, cur3 = x.reshape(a, -1, shape[-1]), x_cur.reshape(a, -1, shape[-1])   # (A, C, L)
        c = x3.shape[1]
        ai = torch.arange(a, device=dev)[:, None, None]
        ci = torch.arange(c, device=dev)[None, :, None]
        win = (ai, ci, pos[:, None, :])                                          # (A, C, s)
        delta = cur3 - x3
        sign_shape = (a, c, 1) if layout == "signal" else (a, 1, s)
        if self.norm == "linf":
            lo3 = lo.reshape(1, c, -1).expand_as(x3)[win] if isinstance(lo, Tensor) else lo
            hi3 = hi.reshape(1, c, -1).expand_as(x3)[win] if isinstance(hi, Tensor) else hi
            x_win, cur_win = x3[win], cur3[win]
            # whether each sign leaves each window entry where it is (after the box clamp), for
            # both signs at once: a redraw then costs a lookup, not a clamp of every window
            keep_up = (torch.clamp(x_win + self.eps, min=lo3, max=hi3) - cur_win).abs() < 1e-7
            keep_down = (torch.clamp(x_win - self.eps, min=lo3, max=hi3) - cur_win).abs() < 1e-7
            signs = _random_signs(sign_shape, gen, x)
            for _ in range(100):
                same = torch.where(signs > 0, keep_up, keep_down).flatten(1).all(1)
                if not bool(same.any()):
                    break
                signs = torch.where(_view(same, signs), _random_signs(sign_shape, gen, x), signs)
            delta[win] = (self.eps * signs).expand(a, c, s)
            return x + delta.reshape(shape)
        eps = self.eps
        pos2 = self._positions(x, s, gen, layout, threat.free(x))
        win2 = (ai, ci, pos2[:, None, :])
        old1 = delta[win]                                                        # (A, C, s)
        norm_win1 = old1.square().sum(dim=2, keepdim=True).sqrt()                # (A, C, 1)
        norm_all = _view(lp_norm(delta, "l2"), delta)                            # (A, 1, 1)
        in_windows = torch.zeros(a, 1, shape[-1], dtype=torch.bool, device=dev)
        in_windows[torch.arange(a, device=dev)[:, None], 0, pos] = True
        in_windows[torch.arange(a, device=dev)[:, None], 0, pos2] = True
        norm_windows = (delta * in_windows).square().sum(dim=2, keepdim=True).sqrt()
        eta = _square_eta_1d(s).to(device=dev, dtype=x.dtype)
        flip = torch.rand(a, generator=gen, device=dev) > 0.5
        bumps = torch.where(flip[:, None, None], eta.flip(0), eta)               # (A, 1, s)
        new = bumps * _random_signs((a, c, 1), gen, x) + old1 / (1e-12 + norm_win1)
        scale = ((eps ** 2 - norm_all.square()).clamp_min(0) / c + norm_windows.square()).sqrt()
        new = new / (1e-12 + new.square().sum(dim=2, keepdim=True).sqrt()) * scale
        delta[win2] = 0.0
        delta[win] = new
        delta = threat.restrict(delta.reshape(shape))
        total = _view(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return x + delta / total * eps

    def _l2_init_1d(self, x: Tensor, gen: torch.Generator, threat: Any) -> Tensor:
        """The L2 start on 1-D inputs: five bumps of length ``T // 5`` side by side (random sign
        per channel and bump), rescaled to ``‖δ‖₂ = ε`` over the free features."""
        shape = x.shape
        k, length = x.shape[0], x.shape[-1]
        x3 = x.reshape(k, -1, length)
        c = x3.shape[1]
        s = max(length // 5, 1)
        start = max((length - 5 * s) // 2, 0)
        eta = _square_eta_1d(s).to(device=x.device, dtype=x.dtype)
        delta = torch.zeros_like(x3)
        for i in range(length // s):
            t0 = start + i * s
            if t0 >= length:
                continue
            t1 = min(t0 + s, length)
            bump = eta.flip(0) if bool(torch.rand(1, generator=gen, device=x.device) > 0.5) else eta
            delta[:, :, t0:t1] += bump[:t1 - t0] * _random_signs((k, c, 1), gen, x)
        delta = threat.restrict(delta.reshape(shape))
        total = _view(lp_norm(delta, "l2").clamp_min(1e-12), delta)
        return x + delta / total * self.eps

