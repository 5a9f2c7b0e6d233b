"""Decision-boundary cross-sections: the predicted class on a 2-D plane through one input, spanned
by the FGSM direction and a random orthogonal one (CS231n lecture 16, Goodfellow 2017; Warde-Farley
& Goodfellow 2016, "Adversarial perturbations of deep neural networks")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from advlab._checks import check_inputs, check_int, check_logits, check_model, eval_mode
from advlab.evaluation.geometry._common import _UNBOUNDED, _check_bounds, _input_gradient, _predict
from advlab.evaluation.robustness import provenance
from advlab.losses import LossFn, get_loss
from advlab.threat import ThreatModel, canonical_norm


def _generator(generator: torch.Generator | None, x: Tensor) -> torch.Generator:
    """The caller's generator, or a fresh one seeded with 0 (never the global RNG)."""
    if generator is None:
        return torch.Generator(device=x.device).manual_seed(0)
    return generator



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
    check_int("resolution", resolution, 2)
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
    check_int("batch_size", batch_size)
    coords = _grid_coords(extent, resolution)
    x = x.detach()
    with eval_mode(model):
        u, v, logits, direction_kind, other_kind = _plane(model, x, y, direction=direction, other=other,
                                                          norm=norm, loss=loss, generator=generator)
        probs = torch.softmax(logits, dim=1)
        clean_conf, clean_cls = probs.max(dim=1)
        classes, confidence, moved = _classify_plane(model, x, coords, u, v, bounds=bounds,
                                                     batch_size=batch_size)
    r = coords.shape[0]
    config = {"direction": direction_kind, "other": other_kind, "extent": (float(coords[0]), float(coords[-1])),
              "resolution": r, "norm": norm, "loss": loss if isinstance(loss, str) else repr(loss),
              "bounds": bounds}
    return DecisionMap(coords=coords, classes=classes, confidence=confidence, u=u, v=v,
                       true_class=int(y[0]), clean_class=int(clean_cls[0]),
                       clean_confidence=float(clean_conf[0]), num_classes=int(logits.shape[1]),
                       norm=norm, direction=direction_kind, other=other_kind, bounds=bounds,
                       clipped_fraction=moved / (r * r), u_norms=_norms(u), v_norms=_norms(v),
                       provenance=provenance(**config))


def _plane(model: nn.Module, x: Tensor, y: Tensor, *, direction: str | Tensor, other: str | Tensor,
           norm: str, loss: str | LossFn,
           generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, str, str]:
    """The plane of :func:`decision_map`: ``u`` and ``v`` (shaped like one input), the clean logits
    ``(1, C)`` and how each direction was chosen. Call inside ``eval_mode``."""
    shape = tuple(x.shape[1:])
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
        u = _unit(_as_input(direction, "direction", x), norm)
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
        raw = _as_input(other, "other", x)
        other_kind = "given"
    u64 = u.double().flatten()
    v64 = _orthogonal_to(u64, raw.double().flatten())
    return u64.to(x.dtype).view(shape), v64.to(x.dtype).view(shape), logits, direction_kind, other_kind


def _as_input(t: Tensor, name: str, x: Tensor) -> Tensor:
    """``t`` as one input shaped like ``x[0]`` (a ``(1, *)`` tensor is accepted too)."""
    shape = tuple(x.shape[1:])
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a string or a tensor shaped like one input, got "
                        f"{type(t).__name__}")
    if tuple(t.shape) == tuple(x.shape):
        t = t[0]
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; it must be shaped like one input "
                         f"{shape} (or like x, {tuple(x.shape)})")
    return t.detach().to(device=x.device)


def _classify_plane(model: nn.Module, x: Tensor, coords: Tensor, u: Tensor, v: Tensor, *,
                    bounds: tuple[float, float] | None, batch_size: int) -> tuple[Tensor, Tensor, int]:
    """Class and confidence ``(R, R)`` at every cell ``x + coords[j] · u + coords[i] · v``, in
    batched forward passes, and the number of cells whose point clipping to ``bounds`` moved."""
    shape = tuple(x.shape[1:])
    r = coords.shape[0]
    a = coords.repeat(r).to(x.dtype)                  # (R*R,) column offset, j fastest
    b = coords.repeat_interleave(r).to(x.dtype)       # (R*R,) row offset
    expand = (-1,) + (1,) * len(shape)
    preds, confs, moved = [], [], 0
    for i in range(0, r * r, batch_size):
        pts = x + a[i:i + batch_size].view(expand) * u + b[i:i + batch_size].view(expand) * v
        if bounds is not None:
            clipped = pts.clamp(bounds[0], bounds[1])
            moved += int((clipped != pts).flatten(1).any(dim=1).sum())
            pts = clipped
        pred, conf = _predict(model, pts, batch_size=batch_size)
        preds.append(pred)
        confs.append(conf)
    return torch.cat(preds).view(r, r), torch.cat(confs).view(r, r), moved
