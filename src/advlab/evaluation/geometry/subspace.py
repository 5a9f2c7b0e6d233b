"""The dimension of the adversarial subspace around a point: the Gradient-Aligned Adversarial
Subspace (GAAS) of Tramèr, Papernot, Goodfellow, Boneh & McDaniel (2017), "The Space of
Transferable Adversarial Examples" (arXiv:1704.03453)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab._checks import check_inputs, check_model, check_number, eval_mode
from advlab.evaluation.geometry._common import _UNBOUNDED, _check_bounds, _input_gradient, _predict
from advlab.evaluation.robustness import provenance
from advlab.losses import LossFn, get_loss

log = logging.getLogger(__name__)


def _householder(x: Tensor) -> tuple[Tensor, Tensor]:
    """Householder vectors ``v`` ``(B, d)`` (``v[:, 0] = 1``) and ``beta`` ``(B,)`` with
    ``(I - beta v vᵀ) x = ||x||_2 e_1`` for each row of ``x`` (Golub & Van Loan, *Matrix
    Computations*, Algorithm 5.1.1, with the cancellation-free choice of ``v_1``)."""
    x0 = x[:, 0]
    sigma = (x[:, 1:] ** 2).sum(dim=1)
    mu = torch.sqrt(x0 ** 2 + sigma)
    trivial = (sigma == 0) & (x0 >= 0)            # already a non-negative multiple of e_1: H = I
    v0 = torch.where(x0 <= 0, x0 - mu, -sigma / (x0 + mu))
    v0 = torch.where(trivial, torch.ones_like(v0), v0)
    beta = torch.where(trivial, torch.zeros_like(v0), 2 * v0 ** 2 / (sigma + v0 ** 2))
    v = torch.cat([torch.ones_like(x0)[:, None], x[:, 1:] / v0[:, None]], dim=1)
    return v, beta


def _gaas_flat(g: Tensor, k: int) -> Tensor:
    """Unit GAAS directions ``(B, k, d)`` float64 for non-zero float64 gradients ``g`` ``(B, d)``."""
    b, d = g.shape
    # S: the reflection with S z = e_1 for z = (1, .., 1, 0, .., 0) / sqrt(k) (k ones); it acts on
    # the first k coordinates only, as the k x k matrix S_k = I - beta_s v_s v_sᵀ.
    z = torch.full((1, k), 1.0 / math.sqrt(k), dtype=torch.float64, device=g.device)
    v_s, beta_s = _householder(z)
    s_k = torch.eye(k, dtype=torch.float64, device=g.device) - beta_s[0] * v_s[0][:, None] * v_s[0][None, :]
    # R: the reflection with R g = ||g|| e_1. r_i = R S e_i = s_i - beta_r v_r (v_rᵀ s_i), s_i = S e_i.
    v_r, beta_r = _householder(g)
    coef = v_r[:, :k] @ s_k                                      # (B, k): v_rᵀ s_i (S_k symmetric)
    out = -(beta_r[:, None, None] * coef[:, :, None]) * v_r[:, None, :]   # (B, k, d)
    out[:, :, :k] += s_k.T[None]                                 # + s_i, supported on the first k coords
    return out


def gaas_directions(grad: Tensor, k: int, *, eps: float = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
    """``k`` orthogonal perturbations of L2 norm ``eps``, each with ``⟨r_i, g⟩ = eps ||g||_2 / √k``.

    The Gradient-Aligned Adversarial Subspace of Tramèr et al. (2017, "The Space of Transferable
    Adversarial Examples"), built as in the proof of their Lemma 1: with
    ``z = (1, …, 1, 0, …, 0)/√k`` (k ones), an orthogonal ``Q`` with ``Q g = ||g||_2 z`` is the product ``Q = S R`` of two
    Householder reflections, ``R g = ||g||_2 e_1`` and ``S z = e_1`` (so ``S e_1 = z``); then
    ``r_i = eps · Qᵀ e_i = eps · R S e_i`` for ``i = 1..k``. The ``r_i`` are orthonormal (times
    ``eps``) because ``Q`` is orthogonal, and ``⟨r_i, g⟩ = eps ⟨e_i, Q g⟩ = eps ||g||_2 z_i``.
    Lemma 1: ``k = min(⌊1/α²⌋, d)`` is the largest number of orthogonal unit vectors with
    alignment ``⟨r, g/||g||⟩ ≥ α`` (Bessel's inequality gives ``k α² ≤ 1``), so no construction
    gives more directions at alignment ``1/√k``.
    For ``k = 1`` the one direction is ``eps · g/||g||_2``, the FGM step. Computed in float64
    without forming a d×d matrix; returned in ``grad``'s dtype.

    ``e_1..e_k`` are the first ``k`` input coordinates, as in the paper. With a ``generator`` the
    construction is done in randomly permuted and sign-flipped coordinates instead (a random signed
    permutation, which is orthogonal, so every property above holds), which spreads the part of each
    ``r_i`` orthogonal to ``g`` over random pixels instead of the first ``k``.

    Args:
        grad: ``(B, *)`` non-zero gradients (one per point).
        k: the number of directions, ``1 <= k <= d``.
        eps: the L2 norm of each direction.
        generator: ``None`` for the paper's coordinates, else draws the random signed permutation.

    Returns:
        ``(B, k, *)`` directions.
    """
    if not isinstance(grad, Tensor) or grad.dim() < 2 or not grad.is_floating_point():
        raise ValueError("grad must be a floating-point tensor of shape (B, ...)")
    b = grad.shape[0]
    flat = grad.detach().reshape(b, -1).double()
    d = flat.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ValueError(f"k must be an integer in [1, {d}] (the input dimension), got {k!r}")
    check_number("eps", eps)
    if bool((flat.abs().amax(dim=1) == 0).any()) or not bool(torch.isfinite(flat).all()):
        raise ValueError("every gradient must be finite and non-zero: the GAAS is aligned with it")
    if generator is None:
        out = _gaas_flat(flat, k)
    else:
        perm, signs = _signed_permutations(b, d, generator=generator, device=grad.device)
        out = _unpermute(_gaas_flat(_permute(flat, perm, signs), k), perm, signs)
    return (eps * out).to(grad.dtype).view(b, k, *grad.shape[1:])


def _signed_permutations(b: int, d: int, *, generator: torch.Generator,
                         device: torch.device) -> tuple[Tensor, Tensor]:
    perm = torch.argsort(torch.rand(b, d, generator=generator, device=device), dim=1)
    signs = torch.randint(0, 2, (b, d), generator=generator, device=device).double() * 2 - 1
    return perm, signs


def _permute(flat: Tensor, perm: Tensor, signs: Tensor) -> Tensor:
    """``P g``: coordinate ``j`` of the result is ``signs[j] · g[perm[j]]``."""
    return flat.gather(1, perm) * signs


def _unpermute(out: Tensor, perm: Tensor, signs: Tensor) -> Tensor:
    """``Pᵀ r`` for each of the ``k`` rows of ``out`` ``(B, k, d)``."""
    back = torch.empty_like(out)
    back.scatter_(2, perm[:, None, :].expand_as(out), out * signs[:, None, :])
    return back


@dataclass(frozen=True)
class SubspaceDims:
    """GAAS dimension estimates for a batch of points (see :func:`adversarial_subspace_dim`).

    Attributes:
        ks: the numbers of directions tried, increasing.
        n_adversarial: ``(B, len(ks))`` int64, how many of the ``k`` directions are adversarial
            (-1 on points not measured: misclassified or with a zero gradient).
        dims: ``(B,)`` int64, the largest ``k`` of ``ks`` with at least ``fraction · k``
            adversarial directions; 0 when none qualifies; -1 on points not measured.
        correct: ``(B,)`` bool, the model classifies the clean point correctly.
        zero_grad: ``(B,)`` bool, the loss gradient is exactly zero (GAAS undefined).
        eps: the L2 norm of every direction; fraction: see ``dims``.
        bounds: the box the perturbed points were clipped to, or ``None``.
        provenance: settings, library versions, code revision.
    """

    ks: tuple[int, ...]
    n_adversarial: Tensor
    dims: Tensor
    correct: Tensor
    zero_grad: Tensor
    eps: float
    fraction: float
    bounds: tuple[float, float] | None
    provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def measured(self) -> Tensor:
        """``(B,)`` bool: the points the estimate covers (correct, non-zero gradient)."""
        return self.correct & ~self.zero_grad

    def distribution(self) -> dict[int, int]:
        """``{dimension: number of measured points}`` over ``0`` and every ``k`` of ``ks``."""
        d = self.dims[self.measured]
        return {k: int((d == k).sum()) for k in (0, *self.ks)}

    def adversarial_fraction(self) -> dict[int, float]:
        """``{k: mean over measured points of (adversarial directions) / k}``."""
        m = self.measured
        if not bool(m.any()):
            return {k: float("nan") for k in self.ks}
        counts = self.n_adversarial[m].double()
        return {k: float(counts[:, j].mean() / k) for j, k in enumerate(self.ks)}

    def summary(self) -> dict[str, Any]:
        m = self.measured
        d = self.dims[m].double()
        n_measured = int(m.sum())
        return {"eps": self.eps, "norm": "l2", "fraction": self.fraction, "bounds": self.bounds,
                "ks": list(self.ks), "n": int(self.dims.shape[0]), "n_correct": int(self.correct.sum()),
                "n_zero_grad": int((self.correct & self.zero_grad).sum()), "n_measured": n_measured,
                "mean_dim": float(d.mean()) if n_measured else float("nan"),
                "median_dim": float(d.median()) if n_measured else float("nan"),
                "fraction_at_max_k": float((d == self.ks[-1]).double().mean()) if n_measured else float("nan"),
                "fraction_dim_0": float((d == 0).double().mean()) if n_measured else float("nan"),
                "distribution": {str(k): v for k, v in self.distribution().items()},
                "adversarial_fraction": {str(k): v for k, v in self.adversarial_fraction().items()}}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "dims": self.dims.tolist(),
                "n_adversarial": self.n_adversarial.tolist(), "provenance": dict(self.provenance)}


def _default_ks(max_directions: int) -> tuple[int, ...]:
    ks, k = [], 1
    while k < max_directions:
        ks.append(k)
        k *= 2
    ks.append(max_directions)
    return tuple(ks)


def adversarial_subspace_dim(model: nn.Module, x: Tensor, y: Tensor, *, eps: float,
                             max_directions: int = 64, ks: Sequence[int] | None = None,
                             fraction: float = 1.0, loss: str | LossFn = "ce",
                             bounds: tuple[float, float] | None = None,
                             generator: torch.Generator | None = None, batch_size: int = 1024,
                             progress: bool = False) -> SubspaceDims:
    """Estimate the dimension of the adversarial subspace around each point with the GAAS.

    Tramèr, Papernot, Goodfellow, Boneh & McDaniel (2017), "The Space of Transferable Adversarial
    Examples" (arXiv:1704.03453): at each correctly classified point, with ``g = ∇_x J``,
    build ``k`` orthogonal L2 perturbations ``r_1..r_k`` of norm ``eps`` that all have the same,
    largest possible alignment with the gradient, ``⟨r_i, g⟩ = eps ||g||_2 / √k``
    (:func:`gaas_directions`: two Householder reflections, as in the paper's proof of Lemma 1), and
    count how many of ``x + r_i`` are misclassified, for each ``k`` in ``ks`` (default
    ``1, 2, 4, …, max_directions``). The estimate is the largest ``k`` for which at least
    ``fraction · k`` of the ``k`` directions are adversarial (``fraction = 1``: all of them), 0 if
    none. Each counted direction spans, with the others, a ``k``-dimensional subspace of
    adversarial perturbations, so the estimate is a *lower bound* on that subspace's dimension
    (the paper finds ~25 on average for MNIST models).

    For a linear binary classifier with logit margin ``m = |f(x)|`` and weight difference ``w``,
    every ``r_i`` moves the logit by ``eps ||w|| / √k``, so all ``k`` or none are adversarial, and
    the estimate is the largest tested ``k < (eps ||w|| / m)^2`` (the tests check this).

    By default (``bounds=None``) the points ``x + r_i`` are not clipped to the input box (the
    paper's geometry); pass ``bounds=(0, 1)`` to clip them (which can only shrink each ``r_i``).

    Args:
        model: logits model, evaluated in eval mode and never changed.
        x, y: ``(B, *)`` inputs and ``(B,)`` labels.
        eps: the L2 norm of each direction, ``> 0``.
        max_directions: the largest ``k`` (default 64), at most the input dimension.
        ks: the ``k`` to try instead of the powers of two (increasing).
        fraction: in ``(0, 1]``, the share of the ``k`` directions that must be adversarial.
        loss: the objective whose gradient ``g`` is used (CE; see :mod:`advlab.losses`).
        bounds: ``None`` (no clipping) or ``(lo, hi)``.
        generator: ``None`` for the paper's coordinates; else a random signed permutation per
            point (see :func:`gaas_directions`).
        batch_size: points per forward pass.

    Returns:
        :class:`SubspaceDims`; ``distribution()`` is the histogram of the estimates over the
        measured points (correct, non-zero gradient), whose count the summary states.
    """
    check_model(model)
    bounds = _check_bounds(bounds)
    check_inputs(model, x, y, bounds=bounds or _UNBOUNDED, generator=generator)
    check_number("eps", eps)
    check_number("fraction", fraction, high=1.0)
    d = x[0].numel()
    if ks is None:
        if isinstance(max_directions, bool) or not isinstance(max_directions, int) or not 1 <= max_directions <= d:
            raise ValueError(f"max_directions must be an integer in [1, {d}], got {max_directions!r}")
        ks = _default_ks(max_directions)
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d for k in ks) \
            or any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must be increasing integers in [1, {d}], got {ks!r}")
    x = x.detach()
    n = x.shape[0]
    n_adv = torch.full((n, len(ks)), -1, dtype=torch.long, device=x.device)
    with eval_mode(model):
        grad, logits = _input_gradient(model, x, y, get_loss(loss))
        correct = logits.argmax(dim=1) == y
        zero_grad = grad.flatten(1).abs().amax(dim=1) == 0
        idx = (correct & ~zero_grad).nonzero().squeeze(1)
        if int((correct & zero_grad).sum()):
            log.warning("%d correctly classified points have an exactly zero loss gradient; they are "
                        "left out of the GAAS estimate (use loss='cw' to avoid a saturated softmax)",
                        int((correct & zero_grad).sum()))
        if idx.numel():
            n_adv[idx] = _count_adversarial(model, x[idx], y[idx], grad[idx], ks, eps=eps, bounds=bounds,
                                            generator=generator, batch_size=batch_size, progress=progress)
    need = torch.tensor([math.ceil(fraction * k - 1e-9) for k in ks], device=x.device)
    ok = n_adv >= need[None, :]                                             # (B, K)
    ks_t = torch.tensor(ks, device=x.device)
    dims = torch.where(ok, ks_t[None, :], torch.zeros_like(ks_t)[None, :]).amax(dim=1)
    dims = torch.where(correct & ~zero_grad, dims, torch.full_like(dims, -1))
    return SubspaceDims(ks=ks, n_adversarial=n_adv, dims=dims, correct=correct, zero_grad=zero_grad,
                        eps=float(eps), fraction=float(fraction), bounds=bounds,
                        provenance=provenance(eps=float(eps), norm="l2", ks=list(ks), fraction=fraction,
                                              loss=loss if isinstance(loss, str) else repr(loss),
                                              bounds=bounds, coordinates="paper" if generator is None
                                              else "random signed permutation"))


def _count_adversarial(model: nn.Module, xs: Tensor, ys: Tensor, grad: Tensor, ks: tuple[int, ...], *,
                       eps: float, bounds: tuple[float, float] | None, generator: torch.Generator | None,
                       batch_size: int, progress: bool) -> Tensor:
    """``(M, len(ks))``: for each point and each ``k``, how many of its ``k`` GAAS directions of
    norm ``eps`` (built from its non-zero gradient ``grad``) are misclassified. Call inside
    ``eval_mode``."""
    d = xs[0].numel()
    counts = torch.empty((xs.shape[0], len(ks)), dtype=torch.long, device=xs.device)
    g = grad.flatten(1).double()                                           # (M, d)
    if generator is not None:
        perm, signs = _signed_permutations(g.shape[0], d, generator=generator, device=xs.device)
        g = _permute(g, perm, signs)
    per_chunk = max(1, batch_size // max(ks))
    bar = tqdm(ks, desc="GAAS", disable=not progress, leave=False)
    for j, k in enumerate(bar):
        for c in range(0, xs.shape[0], per_chunk):
            sl = slice(c, c + per_chunk)
            r = _gaas_flat(g[sl], k)                                       # (m, k, d) unit
            if generator is not None:
                r = _unpermute(r, perm[sl], signs[sl])
            m = r.shape[0]
            pts = xs[sl][:, None] + (eps * r).to(xs.dtype).view(m, k, *xs.shape[1:])
            pts = pts.reshape(m * k, *xs.shape[1:])
            if bounds is not None:
                pts = pts.clamp(bounds[0], bounds[1])
            pred, _ = _predict(model, pts, batch_size=batch_size)
            counts[sl, j] = (pred.view(m, k) != ys[sl][:, None]).sum(dim=1)
    return counts
