"""SimBA, Simple Black-box Attack (Guo, Gardner, You, Wilson & Weinberger, ICML 2019), score-based.

Steps ``±ε`` along random orthonormal directions (pixel or DCT basis), keeping a step if it
lowers the true-class probability. Takes an :class:`advlab.oracle.Oracle` answering scores; see
:mod:`advlab.attacks.score` for the conventions every score-based attack shares.

Example:
    >>> result = SimBA(basis="dct", eps=0.2, budget=2000)(Oracle(model, output="scores"), x, y)
    >>> result.norms[result.success]          # L2 distances found
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from advlab._checks import bounds_field, check_choice, check_int, check_number, norm_field
from advlab.attacks._blackbox import budget_alias
from advlab.attacks._score import hand_over, log_prob, need_images, start
from advlab.attacks.contract import Attack, Run

log = logging.getLogger(__name__)

__all__ = ["SimBA", "dct_matrix"]


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The orthonormal DCT-II matrix ``D`` ``(n, n)``: row ``k`` is the ``k``-th basis vector,
    ``D[k, i] = a_k cos(π (2i + 1) k / (2n))`` with ``a_0 = sqrt(1/n)``, ``a_k = sqrt(2/n)``.

    ``D @ D.T = I``; the 2-D basis image of frequency ``(u, v)`` is ``outer(D_H[u], D_W[v])``.
    """
    check_int("n", n)
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


@budget_alias
@dataclass(frozen=True, kw_only=True)
class SimBA(Attack):
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

    On signals ``(B, C, T)`` the DCT basis is the 1-D DCT-II of each channel (frequencies
    ``u < freq_dims`` first, ``freq_dims = max(1, T // 8)``); on tabular inputs ``(B, D)`` it is
    refused (a cosine transform across unordered features means nothing; the pixel basis works
    on any shape). With a threat-model ``mask`` the pixel basis orders the free features only.

    Threat model (an advlab addition: the paper's SimBA has no ε-ball, only the step ``eps``, and
    its perturbation grows as ``eps · sqrt(#accepted steps)`` in L2): ``norm`` and ``max_norm``.
    Every queried and returned point is ``ThreatModel(norm, max_norm, bounds).project(x + δ, x)``,
    so with the default ``max_norm = inf`` it is SimBA with the box clip (a minimal-style attack
    whose ``norms`` report how far it went) and with a finite ``max_norm`` the points stay inside
    that ball. The search state ``δ`` itself is not projected, as the paper keeps its DCT
    coefficients unclipped and clips only the queried image.

    Queries per point: 1 for the clean input, then 1 or 2 per direction, at most
    ``min(budget, oracle budget)``; a point stops at its first adversarial answer. Once every
    direction of the order has been tried (possible on small images) a new random order is drawn
    and the search continues (the paper's ImageNet runs never exhaust their 150k directions).

    Args:
        eps: step length along a basis vector (each direction has unit L2 norm).
        basis: ``"dct"`` or ``"pixel"``.
        budget: most queries per point, the clean query included (``queries=`` is its
            deprecated name).
        norm: ``"l2"`` or ``"linf"``, the norm of the threat model (and of the reported ``norms``).
        max_norm: radius of that ball, ``math.inf`` for none.
        freq_dims, stride, order: the DCT ordering (ignored for the pixel basis).
        bounds: the input box.

    Example:
        >>> result = SimBA(basis="dct", eps=0.2, budget=2000)(Oracle(model, output="scores"), x, y)
        >>> result.norms[result.success]          # L2 distances found
    """

    access: ClassVar[str] = "scores"
    kind: ClassVar[str] = "bounded"
    radius: ClassVar[str] = "max_norm"  # the ball's radius; eps is the paper's step

    eps: float = 0.2
    basis: str = "dct"
    budget: int = 10000
    norm: str = "l2"
    max_norm: float = math.inf
    freq_dims: int | None = None
    stride: int | None = None
    order: str = "strided"
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        check_number("eps (the step along a basis direction)", self.eps)
        check_choice("basis", self.basis, ("dct", "pixel"))
        check_int("budget (queries per point, the clean query included)", self.budget)
        norm_field(self, ("l2", "linf"))
        check_number("max_norm", self.max_norm, allow_inf=True)
        if self.freq_dims is not None:
            check_int("freq_dims", self.freq_dims)
        if self.stride is not None:
            check_int("stride", self.stride)
        check_choice("order", self.order, ("strided", "random"))
        bounds_field(self)


    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        if self.basis != "dct":
            return
        if x.dim() == 2:
            raise ValueError(f"SimBA with the DCT basis needs images (B, C, H, W) or signals (B, C, T): "
                             f"a cosine transform across tabular features (shape {tuple(x.shape)}) has "
                             "no meaning; use basis='pixel' (the standard basis, "
                             "make_attack('simbapixel'))")
        if x.dim() != 3:
            need_images("SimBA with the DCT basis", x)

    def _core(self, run: Run) -> None:
        limit, best, scores = start(run, self.budget, "cw")
        session, threat, gen, probs = run.session, run.threat, run.generator, run.probabilities
        x, y, target = run.x, run.y, run.target
        b = x.shape[0]
        dev = x.device
        cls = target if target is not None else y
        sign = 1.0 if target is not None else -1.0          # maximise sign * log p_cls
        crit = sign * log_prob(scores, cls, probs)           # (B,)
        delta = torch.zeros_like(x)
        cur_scores = scores.clone()
        cur_adv = best.adv.clone()
        d_h = d_w = None
        if self.basis == "dct" and x.dim() == 4:
            _, c, h, w = x.shape
            d_h = dct_matrix(h, dtype=x.dtype, device=dev)
            d_w = dct_matrix(w, dtype=x.dtype, device=dev)
        elif self.basis == "dct":  # a signal (B, C, T): the 1-D DCT of each channel
            d_w = dct_matrix(x.shape[2], dtype=x.dtype, device=dev)
        order = torch.empty(0)
        it = 0
        while True:
            spent = session.queries.to(dev)
            active = (spent < limit) & ~cur_adv
            if not bool(active.any()):
                break
            a = active.nonzero().squeeze(1)
            pos = it % max(order.shape[-1], 1)
            if pos == 0:
                order = self._order(x, b, gen, threat.free(x))  # (B, n_dirs), a fresh random order
            q = self._direction(order[a, pos], x, d_h, d_w)    # (A, *)
            xa = x[a]
            improved = torch.zeros(a.numel(), dtype=torch.bool, device=dev)
            for step in (-self.eps, self.eps):              # x − εq first, then x + εq
                ask = ~improved & (session.queries[a].to(dev) < limit[a])
                if not bool(ask.any()):
                    break
                r = ask.nonzero().squeeze(1)
                trial = delta[a[r]] + step * q[r]
                ans = session(threat.project(xa[r] + trial, xa[r]), a[r])
                new_crit = sign * log_prob(ans, cls[a[r]], probs)
                ok = new_crit > crit[a[r]]
                sel = a[r][ok]
                delta[sel] = trial[ok]
                crit[sel] = new_crit[ok]
                cur_scores[sel] = ans[ok]
                cur_adv[sel] = run.adversarial(ans[ok], sel)
                improved[r[ok]] = True
            it += 1
            if it % 500 == 0:
                log.debug("simba iteration %d: %d active", it, a.numel())
        # SimBA returns where its search ended (the clean point for points it never moved)
        best.x = threat.project(x + delta, x)
        best.scores = cur_scores
        best.adv = cur_adv
        hand_over(run, best, session.queries.to(dev) >= limit)

    def _order(self, x: Tensor, b: int, gen: torch.Generator, free: Tensor | None = None) -> Tensor:
        """``(B, n_dirs)`` int64 direction numbers (flat indices into ``(C, H, W)``), a random order
        per point; for the DCT basis the index is a frequency ``(c, u, v)`` (a signal's:
        ``(c, u)``), low bands first. The pixel basis of a masked threat model orders the free
        features only (a frozen one would cost queries and never move)."""
        dev = x.device
        if self.basis == "pixel":
            n = x[0].numel()
            if free is not None:
                keep = free.reshape(-1).nonzero().squeeze(1)
                keys = torch.rand(b, keep.numel(), generator=gen, device=dev)
                return keep[keys.argsort(dim=1)]
            return torch.rand(b, n, generator=gen, device=dev).argsort(dim=1)
        if x.dim() == 3:  # a signal: frequencies u of each channel, the lowest freq_dims first
            _, c, t = x.shape
            freq = min(self.freq_dims if self.freq_dims is not None else max(1, t // 8), t)
            stride = self.stride if self.stride is not None else max(1, t // 32)
            u = torch.arange(t, device=dev)
            group = torch.where(u < freq, torch.zeros_like(u), 1 + (u - freq) // stride)
            group = group.expand(c, t).reshape(-1).to(x.dtype)
            if self.order == "random":
                keep = (group == 0).nonzero().squeeze(1)
                keys = torch.rand(b, keep.numel(), generator=gen, device=dev)
                return keep[keys.argsort(dim=1)]
            keys = group[None, :] + torch.rand(b, group.numel(), generator=gen, device=dev,
                                               dtype=x.dtype) * 0.5
            return keys.argsort(dim=1)
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
        if x.dim() == 3:  # a signal: the 1-D basis vector u of channel c
            assert d_w is not None
            _, c, t = x.shape
            ch, u = d // t, d % t
            q = torch.zeros(a, c, t, dtype=x.dtype, device=x.device)
            q[torch.arange(a, device=x.device), ch] = d_w[u]
            return q
        assert d_h is not None and d_w is not None
        _, c, h, w = x.shape
        ch, rem = d // (h * w), d % (h * w)
        u, v = rem // w, rem % w
        q = torch.zeros(a, c, h, w, dtype=x.dtype, device=x.device)
        q[torch.arange(a, device=x.device), ch] = d_h[u][:, :, None] * d_w[v][:, None, :]
        return q

