"""The geometry around an input: decision-boundary cross-sections, the dimension of the adversarial
subspace, and how straight an iterative attack's path is.

* :func:`decision_map`: the 2-D cross-section of CS231n lecture 16 (Goodfellow 2017; Warde-Farley &
  Goodfellow 2016, "Adversarial perturbations of deep neural networks"): the plane through one input
  ``x`` spanned by the FGSM direction ``u`` and a random direction ``v ⟂ u`` of the same L2 norm,
  with the predicted class (and its confidence) at every cell of a grid.
* :func:`adversarial_subspace_dim`: the Gradient-Aligned Adversarial Subspace (GAAS) estimate of
  Tramèr, Papernot, Goodfellow, Boneh & McDaniel (2017), "The Space of Transferable Adversarial
  Examples" (arXiv:1704.03453): how many *orthogonal* L2 perturbations of norm ε, all equally
  aligned with the gradient, are adversarial at once. :func:`gaas_directions` builds them.
* :func:`record_trajectory` and :func:`perturbation_cosine_similarity`: the iterates of I-FGSM /
  MI-FGSM and the cosine similarity of successive updates ``x_{t+1} - x_t``, the quantity Dong et
  al. (CVPR 2018, "Boosting Adversarial Attacks with Momentum") use to argue that
  momentum stabilises the update direction.

Nothing here changes the model (weights, modes, ``requires_grad``, ``.grad``), the inputs or the
global RNG; randomness comes from an explicit ``torch.Generator``.

Example:
    >>> dmap = decision_map(model, x[:1], y[:1], extent=0.3, generator=torch.Generator().manual_seed(0))
    >>> dmap.classes.shape, dmap.classes[dmap.origin] == dmap.clean_class
    >>> dims = adversarial_subspace_dim(model, x, y, eps=2.0, max_directions=64)
    >>> dims.distribution(), dims.summary()["mean_dim"]
    >>> cos = perturbation_cosine_similarity(model, x, y)   # I-FGSM vs MI-FGSM, ε = 0.1, 10 steps
    >>> cos.mean("I-FGSM"), cos.mean("MI-FGSM")
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab._checks import check_inputs, check_logits, check_model, eval_mode
from advlab.attacks._base import config_repr
from advlab.attacks.gradient import FGSM, IFGSM, MIFGSM, PGD
from advlab.evaluation.robustness import provenance
from advlab.losses import LossFn, get_loss, objective
from advlab.threat import ThreatModel, canonical_norm

log = logging.getLogger(__name__)

_UNBOUNDED = (-math.inf, math.inf)


def _check_bounds(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be None or a pair (lo, hi), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _generator(generator: torch.Generator | None, x: Tensor) -> torch.Generator:
    """The caller's generator, or a fresh one seeded with 0 (never the global RNG)."""
    if generator is None:
        return torch.Generator(device=x.device).manual_seed(0)
    return generator


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss: LossFn) -> tuple[Tensor, Tensor]:
    """``∇_x J(x, y)`` per point ``(B, *)`` (of the *sum* of the objectives, so no 1/B factor) and
    the logits ``(B, C)``; the model's output is validated first. Call inside ``eval_mode``."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        obj, logits = objective(model, leaf, y, None, loss, check=True)
        grad, = torch.autograd.grad(obj.sum(), leaf)
    return grad.detach(), logits.detach()


def _predict(model: nn.Module, points: Tensor, *, batch_size: int) -> tuple[Tensor, Tensor]:
    """Predicted class and its softmax probability for ``points`` ``(N, *)``, in chunks."""
    preds, confs = [], []
    with torch.no_grad():
        for i in range(0, points.shape[0], batch_size):
            probs = torch.softmax(model(points[i:i + batch_size]), dim=1)
            conf, pred = probs.max(dim=1)
            preds.append(pred)
            confs.append(conf)
    return torch.cat(preds), torch.cat(confs)


# -- decision maps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionMap:
    """A 2-D cross-section of a classifier's decisions around one input ``x``.

    Cell ``[i, j]`` is the point ``x + coords[j] · u + coords[i] · v``: columns move along ``u``
    (the FGSM direction), rows along ``v`` (the orthogonal direction); row 0 is the most negative
    ``v`` offset, so ``imshow(classes, origin="lower")`` draws the plane the usual way up.

    Attributes:
        coords: ``(R,)`` float64, the offsets along each axis (the same for both axes). With
            ``norm="linf"`` and the FGSM direction, ``coords[j]`` is exactly the L∞ size ``ε`` of
            the step ``ε · sign(∇J)``.
        classes: ``(R, R)`` int64, the predicted class at every cell.
        confidence: ``(R, R)`` softmax probability of that class.
        u, v: the two directions, shaped like one input. ``u`` has unit ``norm``-norm;
            ``v ⟂ u`` (Gram–Schmidt) with ``||v||_2 = ||u||_2``.
        true_class: the label ``y`` of ``x``.
        clean_class, clean_confidence: the model's prediction at ``x`` itself.
        num_classes: the number of logits.
        norm: ``"linf"`` (``u = sign(∇J)``) or ``"l2"`` (``u = ∇J / ||∇J||_2``).
        direction: ``"fgsm"`` (the loss gradient's ascent direction at ``x``) or ``"given"``.
        other: ``"random"`` or ``"given"``.
        bounds: the box each point was clipped to, or ``None`` (no clipping: the pure geometry).
        clipped_fraction: fraction of cells whose point clipping changed (0 without ``bounds``).
        u_norms, v_norms: ``{"l2": ..., "linf": ...}`` of the two directions.
        provenance: the settings, library versions and code revision.
    """

    coords: Tensor
    classes: Tensor
    confidence: Tensor
    u: Tensor
    v: Tensor
    true_class: int
    clean_class: int
    clean_confidence: float
    num_classes: int
    norm: str
    direction: str
    other: str
    bounds: tuple[float, float] | None
    clipped_fraction: float
    u_norms: Mapping[str, float]
    v_norms: Mapping[str, float]
    provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def resolution(self) -> int:
        return int(self.coords.shape[0])

    @property
    def origin(self) -> tuple[int, int] | None:
        """The ``(row, column)`` index of the clean input ``x`` on the grid, or ``None`` when 0 is
        not one of ``coords`` (even ``resolution`` or an extent that excludes 0)."""
        zero = (self.coords == 0).nonzero()
        if zero.numel() == 0:
            return None
        i = int(zero[0, 0])
        return i, i

    @property
    def adversarial_fraction(self) -> float:
        """Fraction of cells whose class differs from the true class."""
        return float((self.classes != self.true_class).double().mean())

    def summary(self) -> dict[str, Any]:
        present = torch.unique(self.classes).tolist()
        return {"true_class": self.true_class, "clean_class": self.clean_class,
                "clean_confidence": self.clean_confidence, "classes_present": present,
                "adversarial_fraction": self.adversarial_fraction, "resolution": self.resolution,
                "extent": (float(self.coords[0]), float(self.coords[-1])), "norm": self.norm,
                "direction": self.direction, "other": self.other, "bounds": self.bounds,
                "clipped_fraction": self.clipped_fraction, "u_norms": dict(self.u_norms),
                "v_norms": dict(self.v_norms)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary plus the grid, the class map and the confidences."""
        return {**self.summary(), "coords": self.coords.tolist(), "classes": self.classes.tolist(),
                "confidence": self.confidence.tolist(), "provenance": dict(self.provenance)}


def _grid_coords(extent: float | tuple[float, float], resolution: int) -> Tensor:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    if isinstance(extent, (int, float)) and not isinstance(extent, bool):
        lo, hi = -float(extent), float(extent)
    else:
        try:
            lo, hi = (float(e) for e in extent)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"extent must be a number e (for (-e, e)) or a pair (lo, hi), got {extent!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"extent must be finite with lo < hi, got {extent!r}")
    coords = lo + (hi - lo) * torch.arange(resolution, dtype=torch.float64) / (resolution - 1)
    # make the grid point nearest 0 exactly 0 when 0 lies on the grid, so the centre cell is x itself
    coords[coords.abs() < 1e-9 * (hi - lo)] = 0.0
    return coords


def _unit(direction: Tensor, norm: str) -> Tensor:
    flat = direction.double().flatten()
    scale = flat.abs().max() if norm == "linf" else torch.linalg.vector_norm(flat)
    if not bool(torch.isfinite(flat).all()) or float(scale) == 0:
        raise ValueError("the direction is zero or not finite; pass a non-zero finite tensor")
    return (flat / scale).view_as(direction)


def _orthogonal_to(u: Tensor, v: Tensor) -> Tensor:
    """Gram–Schmidt (twice, for float64 accuracy): ``v`` minus its projection on ``u``,
    rescaled to ``||u||_2``. Both are flat float64."""
    raw = torch.linalg.vector_norm(v)
    uu = torch.dot(u, u)
    for _ in range(2):
        v = v - (torch.dot(v, u) / uu) * u
    left = torch.linalg.vector_norm(v)
    if not bool(torch.isfinite(left)) or float(left) <= 1e-6 * float(raw):
        raise ValueError("the other direction is (numerically) parallel to the first one; pass a "
                         "direction with a component orthogonal to it")
    return v * (torch.linalg.vector_norm(u) / left)


def _norms(t: Tensor) -> dict[str, float]:
    flat = t.double().flatten()
    return {"l2": float(torch.linalg.vector_norm(flat)), "linf": float(flat.abs().max())}


def decision_map(model: nn.Module, x: Tensor, y: Tensor | int, *,
                 direction: str | Tensor = "fgsm", other: str | Tensor = "random",
                 extent: float | tuple[float, float] = 0.25, resolution: int = 41,
                 norm: str = "linf", loss: str | LossFn = "ce",
                 bounds: tuple[float, float] | None = None,
                 generator: torch.Generator | None = None, batch_size: int = 1024) -> DecisionMap:
    """The predicted class on a 2-D grid through one input: FGSM direction × random orthogonal one.

    The cross-section of CS231n lecture 16 (after Warde-Farley & Goodfellow 2016): for the input
    ``x``, ``u`` is the steepest-ascent direction of the loss at ``x`` in ``norm``
    (``sign(∇_x J(x, y))`` for L∞, FGSM's direction; ``∇J / ||∇J||_2`` for L2) or a ``direction``
    you pass, normalised to unit ``norm``-norm; ``v`` is a Gaussian direction from ``generator``
    (or ``other``), made orthogonal to ``u`` by Gram–Schmidt and scaled to ``||v||_2 = ||u||_2``.
    Every cell ``x + a·u + b·v`` for ``a, b`` on ``resolution`` evenly spaced offsets in
    ``extent`` is classified in batched forward passes (no gradients).

    With the default ``bounds=None`` the points are *not* clipped to the input box: the map is the
    pure geometry of the model on a plane (corner cells can leave [0, 1]). Pass ``bounds=(0, 1)``
    to clamp every point, as an attack would; ``clipped_fraction`` then says how many cells moved.
    An odd ``resolution`` with a symmetric extent puts ``x`` itself at the centre cell.

    Args:
        model: an ``nn.Module`` returning logits; run in eval mode, never changed.
        x: one input, ``(1, *)``; y: its label, an ``int`` or a ``(1,)`` tensor.
        direction: ``"fgsm"`` or a tensor shaped like ``x`` (or ``x[0]``).
        other: ``"random"`` or a tensor (made orthogonal to ``u`` and rescaled likewise).
        extent: ``e`` for ``(-e, e)`` or ``(lo, hi)``, the offsets ``a`` and ``b`` in units of ``u``.
        resolution: cells per axis (41 gives a centre cell).
        norm: ``"linf"`` or ``"l2"``, the norm in which ``u`` has unit length.
        loss: the objective whose gradient gives the FGSM direction (see :mod:`advlab.losses`).
        bounds: ``None`` (no clipping) or ``(lo, hi)``.
        generator: for the random direction; ``None`` uses a fresh generator seeded with 0.
        batch_size: points per forward pass.

    Returns:
        A :class:`DecisionMap`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> dmap = decision_map(model, x[3:4], y[3:4], extent=0.3, generator=g)
        >>> decision_map_figure(dmap, class_names=names, path="map.png")   # advlab.reports
    """
    check_model(model)
    norm = canonical_norm(norm)
    if norm not in ("linf", "l2"):
        raise ValueError(f"decision_map supports norm 'linf' or 'l2', got {norm!r}")
    bounds = _check_bounds(bounds)
    if isinstance(y, int) and not isinstance(y, bool):
        y = torch.tensor([y], dtype=torch.long, device=x.device if isinstance(x, Tensor) else None)
    check_inputs(model, x, y, bounds=bounds or _UNBOUNDED, generator=generator)
    if x.shape[0] != 1:
        raise ValueError(f"decision_map maps one input, got a batch of {x.shape[0]}; pass x[i:i + 1]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    coords = _grid_coords(extent, resolution)
    x = x.detach()
    shape = tuple(x.shape[1:])

    def as_input(t: Tensor, name: str) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a string or a tensor shaped like one input, got "
                            f"{type(t).__name__}")
        if tuple(t.shape) == tuple(x.shape):
            t = t[0]
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; it must be shaped like one input "
                             f"{shape} (or like x, {tuple(x.shape)})")
        return t.detach().to(device=x.device)

    with eval_mode(model):
        if isinstance(direction, str):
            if direction.lower() != "fgsm":
                raise ValueError(f"direction must be 'fgsm' or a tensor, got {direction!r}")
            grad, logits = _input_gradient(model, x, y, get_loss(loss))
            if float(grad.abs().max()) == 0:
                raise ValueError("the loss gradient at x is exactly zero (a saturated softmax?), so "
                                 "the FGSM direction is undefined; use loss='cw' or pass direction=")
            threat = ThreatModel(norm=norm, eps=0.0)
            u = _unit(threat.ascent_direction(grad)[0], norm)
            direction_kind = "fgsm"
        else:
            u = _unit(as_input(direction, "direction"), norm)
            with torch.no_grad():
                logits = model(x)
            check_logits(logits, y, None)
            direction_kind = "given"
        if isinstance(other, str):
            if other.lower() != "random":
                raise ValueError(f"other must be 'random' or a tensor, got {other!r}")
            gen = _generator(generator, x)
            raw = torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype)
            other_kind = "random"
        else:
            raw = as_input(other, "other")
            other_kind = "given"
        u64 = u.double().flatten()
        v64 = _orthogonal_to(u64, raw.double().flatten())
        u_t = u64.to(x.dtype).view(shape)
        v_t = v64.to(x.dtype).view(shape)

        probs = torch.softmax(logits, dim=1)
        clean_conf, clean_cls = probs.max(dim=1)
        r = coords.shape[0]
        a = coords.repeat(r).to(x.dtype)                  # (R*R,) column offset, j fastest
        b = coords.repeat_interleave(r).to(x.dtype)       # (R*R,) row offset
        expand = (-1,) + (1,) * len(shape)
        preds, confs, moved = [], [], 0
        for i in range(0, r * r, batch_size):
            pts = x + a[i:i + batch_size].view(expand) * u_t + b[i:i + batch_size].view(expand) * v_t
            if bounds is not None:
                clipped = pts.clamp(bounds[0], bounds[1])
                moved += int((clipped != pts).flatten(1).any(dim=1).sum())
                pts = clipped
            pred, conf = _predict(model, pts, batch_size=batch_size)
            preds.append(pred)
            confs.append(conf)
    classes = torch.cat(preds).view(r, r)
    confidence = torch.cat(confs).view(r, r)
    config = {"direction": direction_kind, "other": other_kind, "extent": (float(coords[0]), float(coords[-1])),
              "resolution": r, "norm": norm, "loss": loss if isinstance(loss, str) else repr(loss),
              "bounds": bounds}
    return DecisionMap(coords=coords, classes=classes, confidence=confidence, u=u_t, v=v_t,
                       true_class=int(y[0]), clean_class=int(clean_cls[0]),
                       clean_confidence=float(clean_conf[0]), num_classes=int(logits.shape[1]),
                       norm=norm, direction=direction_kind, other=other_kind, bounds=bounds,
                       clipped_fraction=moved / (r * r), u_norms=_norms(u_t), v_norms=_norms(v_t),
                       provenance=provenance(**config))


# -- the gradient-aligned adversarial subspace (Tramèr et al. 2017) ---------------------------------


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
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
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
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (an L2 radius), got {eps!r}")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
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
            g = grad[idx].flatten(1).double()                              # (M, d)
            if generator is not None:
                perm, signs = _signed_permutations(g.shape[0], d, generator=generator, device=x.device)
                g = _permute(g, perm, signs)
            xs, ys = x[idx], y[idx]
            per_chunk = max(1, batch_size // max(ks))
            bar = tqdm(ks, desc="GAAS", disable=not progress, leave=False)
            for j, k in enumerate(bar):
                for c in range(0, idx.numel(), per_chunk):
                    sl = slice(c, c + per_chunk)
                    r = _gaas_flat(g[sl], k)                               # (m, k, d) unit
                    if generator is not None:
                        r = _unpermute(r, perm[sl], signs[sl])
                    m = r.shape[0]
                    pts = xs[sl][:, None] + (eps * r).to(x.dtype).view(m, k, *x.shape[1:])
                    pts = pts.reshape(m * k, *x.shape[1:])
                    if bounds is not None:
                        pts = pts.clamp(bounds[0], bounds[1])
                    pred, _ = _predict(model, pts, batch_size=batch_size)
                    wrong = pred.view(m, k) != ys[sl][:, None]
                    n_adv[idx[sl], j] = wrong.sum(dim=1)
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


# -- attack trajectories and the cosine similarity of successive updates ----------------------------


@dataclass(frozen=True)
class Trajectory:
    """The iterates of one run of a gradient attack on a batch.

    Attributes:
        iterates: ``(T + 1, B, *)``: ``iterates[0]`` is the start (``x``, or PGD's random start),
            ``iterates[t]`` the point after ``t`` steps; ``iterates[-1]`` is the attack's ``x_adv``.
        directions: ``(T, B, *)``: the step direction of step ``t`` before projection,
            ``dir_p(g_t)`` (or ``dir_p(m_t)`` with momentum), so that
            ``iterates[t + 1] = Π(iterates[t] + α · directions[t])``.
        step_size: ``α``; threat: the threat model; attack: the attack's configuration.
    """

    iterates: Tensor
    directions: Tensor
    step_size: float
    threat: ThreatModel
    attack: str

    @property
    def steps(self) -> int:
        return int(self.directions.shape[0])

    @property
    def x_adv(self) -> Tensor:
        return self.iterates[-1]

    @property
    def updates(self) -> Tensor:
        """``(T, B, *)`` ``x_{t+1} - x_t``, the updates after projection."""
        return self.iterates[1:] - self.iterates[:-1]


def _schedule_of(attack: Any) -> tuple[int, float, float | None, bool, float]:
    """``(steps, step_size, momentum, random_start, l1_sparsity)`` exactly as the attack's
    ``__call__`` builds its :class:`~advlab.attacks._loop.Schedule`."""
    if getattr(attack, "early_stop", False):
        raise ValueError(f"{type(attack).__name__} has early_stop=True, which freezes points mid-run; "
                         "record the trajectory of the attack with early_stop=False")
    if isinstance(attack, FGSM):
        return 1, attack.eps, None, False, 0.05
    if isinstance(attack, MIFGSM):
        step_size = attack.step_size if attack.step_size is not None else attack.eps / attack.steps
        return attack.steps, step_size, float(attack.decay), False, 0.05
    if isinstance(attack, IFGSM):
        step_size = attack.step_size if attack.step_size is not None else attack.eps / attack.steps
        return attack.steps, step_size, None, False, 0.05
    if isinstance(attack, PGD):
        if attack.restarts != 1:
            raise ValueError("record_trajectory follows one run; use PGD with restarts=1")
        step_size = attack.step_size if attack.step_size is not None else 2.5 * attack.eps / attack.steps
        return attack.steps, step_size, None, attack.random_start, attack.l1_sparsity
    raise TypeError(f"record_trajectory supports FGSM, IFGSM, MIFGSM and PGD configurations, got "
                    f"{type(attack).__name__}")


def record_trajectory(attack: Any, model: nn.Module, x: Tensor, y: Tensor, *,
                      target: Tensor | None = None,
                      generator: torch.Generator | None = None) -> Trajectory:
    """Run a gradient attack and keep every iterate: a recorder of the shared step loop.

    The shared loop (:mod:`advlab.attacks._loop`) returns only the last iterate. This reproduces
    its update step for step with the same pieces (:func:`advlab.losses.objective`, the gradient of
    the batch-mean objective, MI-FGSM's ``m_t = μ m_{t-1} + g_t / mean|g_t|``,
    :meth:`ThreatModel.ascent_direction`, :meth:`ThreatModel.project`) and in the same order, so
    ``record_trajectory(a, model, x, y).x_adv`` equals ``a(model, x, y).x_adv`` bit for bit on the
    same batch (the tests check this for I-FGSM and MI-FGSM, and every iterate against the inputs
    the real attack feeds the model). ``x`` must be the same batch as the attack's: the gradient of
    the batch *mean* enters MI-FGSM's normalisation in the last bits.

    Supports :class:`FGSM`, :class:`IFGSM`, :class:`MIFGSM` and :class:`PGD` (``restarts=1``; its
    random start is drawn from ``generator`` exactly as the attack draws it) with
    ``early_stop=False``.

    Returns:
        A :class:`Trajectory` with ``T + 1`` iterates ``(T + 1, B, *)`` and ``T`` directions.
    """
    check_model(model)
    steps, step_size, momentum, random_start, l1_sparsity = _schedule_of(attack)
    threat = ThreatModel(norm=attack.norm, eps=attack.eps, bounds=attack.bounds, targeted=target is not None)
    check_inputs(model, x, y, bounds=threat.bounds, target=target, generator=generator)
    loss = get_loss(attack.loss)
    if random_start and generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    x = x.detach()
    iterates, directions = [], []
    with eval_mode(model), torch.enable_grad():
        x_adv = threat.random_start(x, generator=generator) if random_start else x
        x_adv = x_adv.detach()
        iterates.append(x_adv.clone())
        velocity = torch.zeros_like(x) if momentum is not None else None
        reduce_dims = tuple(range(1, x.dim()))
        for step in range(steps):
            x_adv.requires_grad_(True)
            obj, _ = objective(model, x_adv, y, target, loss, check=step == 0)
            grad, = torch.autograd.grad(obj.mean(), x_adv)
            if velocity is not None:
                grad = grad / grad.abs().mean(dim=reduce_dims, keepdim=True).clamp_min(1e-30)
                velocity = grad + velocity * momentum
                grad = velocity
            direction = threat.ascent_direction(grad, x_adv=x_adv, l1_sparsity=l1_sparsity)
            x_adv = x_adv.detach() + step_size * direction
            x_adv = threat.project(x_adv, x)
            directions.append(direction.detach())
            iterates.append(x_adv.detach().clone())
    if not bool(torch.isfinite(iterates[-1]).all()):
        raise FloatingPointError("the attack produced NaN/Inf inputs: the model's gradient is NaN or "
                                 "Inf on some points")
    return Trajectory(iterates=torch.stack(iterates), directions=torch.stack(directions),
                      step_size=float(step_size), threat=threat, attack=config_repr(attack))


def successive_cosine(steps: Tensor) -> Tensor:
    """``cos(s_t, s_{t+1})`` per point for a stack ``(T, B, *)`` -> ``(T - 1, B)``; NaN where either
    vector is zero (e.g. an update removed entirely by the projection)."""
    flat = steps.flatten(2).double()                                      # (T, B, d)
    a, b = flat[:-1], flat[1:]
    na, nb = torch.linalg.vector_norm(a, dim=2), torch.linalg.vector_norm(b, dim=2)
    cos = (a * b).sum(dim=2) / (na * nb)
    return torch.where((na > 0) & (nb > 0), cos, torch.full_like(cos, float("nan")))


@dataclass(frozen=True)
class CosineSimilarity:
    """Cosine similarity of successive steps of iterative attacks, per point and step.

    Attributes:
        update_cosine: ``{name: (n, T - 1)}``: ``cos(x_{t+1} - x_t, x_{t+2} - x_{t+1})`` (the updates
            after projection), column ``t`` for the pair of steps ``t + 1`` and ``t + 2``; NaN where
            an update is zero.
        direction_cosine: ``{name: (n, T - 1)}``: the same for the raw step directions
            (``sign(g_t)`` / ``sign(m_t)``, before projection).
        success: ``{name: (n,)}`` bool, the final iterate is misclassified (untargeted).
        configs: ``{name: the attack's configuration}``.
        n: points given; n_used: points attacked (the correctly classified ones by default).
        provenance: library versions, code revision, settings.
    """

    update_cosine: Mapping[str, Tensor]
    direction_cosine: Mapping[str, Tensor]
    success: Mapping[str, Tensor]
    configs: Mapping[str, str]
    n: int
    n_used: int
    provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.update_cosine)

    def _table(self, of: str) -> Mapping[str, Tensor]:
        if of == "update":
            return self.update_cosine
        if of == "direction":
            return self.direction_cosine
        raise ValueError(f"of must be 'update' or 'direction', got {of!r}")

    def per_step(self, name: str, *, of: str = "update") -> Tensor:
        """``(T - 1,)`` mean over points (NaNs left out) for each pair of successive steps."""
        return self._table(of)[name].nanmean(dim=0)

    def mean(self, name: str, *, of: str = "update") -> float:
        """The mean over points and step pairs (NaNs left out)."""
        return float(self._table(of)[name].nanmean())

    def quantiles(self, name: str, q: Sequence[float], *, of: str = "update") -> Tensor:
        """``(len(q), T - 1)`` per-step quantiles over points (NaNs left out)."""
        return torch.nanquantile(self._table(of)[name], torch.tensor(list(q), dtype=torch.float64), dim=0)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "n_used": self.n_used, "attacks": {}}
        for name in self.names:
            out["attacks"][name] = {
                "config": self.configs[name],
                "mean_update_cosine": self.mean(name),
                "mean_direction_cosine": self.mean(name, of="direction"),
                "per_step_update_cosine": self.per_step(name).tolist(),
                "per_step_direction_cosine": self.per_step(name, of="direction").tolist(),
                "undefined_pairs": int(torch.isnan(self.update_cosine[name]).sum()),
                "success_rate": float(self.success[name].double().mean()) if self.n_used else float("nan"),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "provenance": dict(self.provenance)}


def default_cosine_attacks(eps: float = 0.1, steps: int = 10) -> dict[str, Any]:
    """I-FGSM and MI-FGSM (μ = 1) with ``α = ε / T``, as in Dong et al. (2018)."""
    return {"I-FGSM": IFGSM(eps=eps, steps=steps), "MI-FGSM": MIFGSM(eps=eps, steps=steps, decay=1.0)}


def perturbation_cosine_similarity(model: nn.Module, x: Tensor, y: Tensor, *,
                                   attacks: Mapping[str, Any] | None = None,
                                   only_correct: bool = True, batch_size: int = 500,
                                   generator: torch.Generator | None = None,
                                   progress: bool = False) -> CosineSimilarity:
    """The cosine similarity of successive updates of iterative attacks, per step, over points.

    Dong et al. (CVPR 2018, "Boosting Adversarial Attacks with Momentum") argue that
    momentum stabilises the update direction: MI-FGSM's successive perturbations should be more
    similar than I-FGSM's. For each attack (default :func:`default_cosine_attacks`: I-FGSM and
    MI-FGSM, ε = 0.1 L∞, 10 steps, α = ε/10) the iterates are recorded with
    :func:`record_trajectory` (bit-identical to the attack) and, for every point and every pair of
    successive steps, ``cos(x_{t+1} - x_t, x_{t+2} - x_{t+1})`` is computed (also for the raw
    directions before projection). By default only the correctly classified points are attacked
    (``n_used`` says how many).

    Args:
        model: logits model, never changed.
        x, y: ``(N, *)`` inputs and ``(N,)`` labels.
        attacks: ``{name: attack configuration}`` (FGSM, IFGSM, MIFGSM or PGD without early stop).
        only_correct: attack only the points the model classifies correctly.
        batch_size: points per attack call (the batch matters only in the last bits).
        generator: for PGD's random start.

    Returns:
        A :class:`CosineSimilarity`; ``mean(name)`` and ``per_step(name)`` are the headline numbers.
    """
    check_model(model)
    attacks = dict(attacks) if attacks is not None else default_cosine_attacks()
    if not attacks:
        raise ValueError("perturbation_cosine_similarity needs at least one attack")
    first = next(iter(attacks.values()))
    check_inputs(model, x, y, bounds=first.bounds, generator=generator)
    x = x.detach()
    n = x.shape[0]
    if only_correct:
        with eval_mode(model):
            pred, _ = _predict(model, x, batch_size=max(batch_size, 512))
        idx = (pred == y).nonzero().squeeze(1)
    else:
        idx = torch.arange(n, device=x.device)
    ups: dict[str, list[Tensor]] = {k: [] for k in attacks}
    dirs: dict[str, list[Tensor]] = {k: [] for k in attacks}
    succ: dict[str, list[Tensor]] = {k: [] for k in attacks}
    jobs = [(name, i) for name in attacks for i in range(0, idx.numel(), batch_size)]
    for name, i in tqdm(jobs, desc="trajectories", disable=not progress, leave=False):
        attack = attacks[name]
        b = idx[i:i + batch_size]
        traj = record_trajectory(attack, model, x[b], y[b], generator=generator)
        ups[name].append(successive_cosine(traj.updates).T)               # (m, T - 1)
        dirs[name].append(successive_cosine(traj.directions).T)
        with eval_mode(model):
            pred, _ = _predict(model, traj.x_adv, batch_size=batch_size)
        succ[name].append(pred != y[b])

    def cat(parts: list[Tensor], name: str, width: int) -> Tensor:
        return torch.cat(parts) if parts else torch.empty(0, width, dtype=torch.float64)

    widths = {name: max(_schedule_of(a)[0] - 1, 0) for name, a in attacks.items()}
    configs = {name: config_repr(a) for name, a in attacks.items()}
    return CosineSimilarity(
        update_cosine={k: cat(v, k, widths[k]) for k, v in ups.items()},
        direction_cosine={k: cat(v, k, widths[k]) for k, v in dirs.items()},
        success={k: torch.cat(v) if v else torch.empty(0, dtype=torch.bool) for k, v in succ.items()},
        configs=configs, n=n, n_used=int(idx.numel()),
        provenance=provenance(attacks=configs, only_correct=only_correct, batch_size=batch_size))
