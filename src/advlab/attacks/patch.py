"""Adversarial patches: one universal, targeted patch that works wherever it is pasted.

Brown, Mané, Roy, Abadi & Gilmer, "Adversarial Patch", 2017 (arXiv:1712.09665). The patch ``p``
is trained by expectation over transformation (EOT, Athalye et al. 2018): with ``A(p, x, τ)``
the image ``x`` with ``p`` pasted under the transformation ``τ`` (location, rotation, scale),

    p̂ = argmax_p  E_{x ~ X, τ ~ T} [ log Pr(t | A(p, x, τ)) ]

estimated on a minibatch with one random ``τ`` per image at each step, ascended with Adam and
clipped to the input bounds after each step. On an :class:`advlab.models.Ensemble` fused in loss
the objective is the weighted sum of the members' ``log Pr(t | ·)`` (:func:`advlab.losses.objective`).

Pasting. The patch is a ``(C, s, s)`` square and its mask ``(1, s, s)`` is 1 on the square
(``shape="square"``) or on the inscribed disc (``shape="circle"``). A transformation is a centre
``c = (c_x, c_y)`` in pixel units (pixel ``j`` covers ``[j, j + 1)``), an angle ``a`` and a scale
``σ``; the patch pixel under image pixel ``P`` is ``Q = R(a)^{-1} (P − c) / σ + s / 2``. Both the
pre-multiplied patch ``p · m`` and the mask are resampled with ``affine_grid``/``grid_sample``
(bilinear, zeros outside, ``align_corners=False``) and composited as

    A(p, x, τ) = x · (1 − m_τ) + (p · m)_τ

so pixels outside the transformed mask (``m_τ = 0``) are exactly ``x``. With ``a = 0``, ``σ = 1``
and an integer top-left corner ``(i, j)`` (``c = (j + s/2, i + s/2)``) the patch lands exactly on
rows ``i..i+s-1`` and columns ``j..j+s-1``; a positive angle turns the patch clockwise as
displayed with rows downward (90° lands ``torch.rot90(p, -1, (1, 2))`` there). Random locations
draw an integer top-left corner such that the transformed square's bounding box stays inside the
image (the centre, if it cannot).

Patch size: a float in ``(0, 1]`` is the fraction of the image area covered by the patch's
square, side ``s = round(sqrt(f · H · W))``; an int is the side ``s`` in pixels. A circle covers
``π/4`` of its square.

Success is ``k̂(A(p, x, τ)) = t`` averaged over random ``τ`` and over the points whose reference
label (``y`` if given, else the clean prediction) is not ``t``.

Example:
    >>> fit = AdversarialPatch(target_class=8, patch_size=0.1, steps=500)
    >>> result = fit(model, x_train[:1000], generator=torch.Generator().manual_seed(0))
    >>> patch_success(model, x_test, result, samples=8)      # held-out success rate
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import bounds_field, check_int, check_model, check_number, eval_mode, input_grad
from advlab.attacks._base import config_repr
from advlab.attacks.contract import Attack, needs_autograd
from advlab.attacks.universal import class_index, reference_labels
from advlab.losses import cross_entropy, objective
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

SHAPES = ("square", "circle")
EVAL_BATCH = 512


# -- geometry -------------------------------------------------------------------------------------


def patch_side(patch_size: float | int, image_hw: tuple[int, int]) -> int:
    """The side ``s`` in pixels of a patch of ``patch_size`` (area fraction or pixels)."""
    h, w = image_hw
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, float)):
        raise TypeError(f"patch_size must be a float in (0, 1] (fraction of the image area) or an "
                        f"int >= 1 (side in pixels), got {patch_size!r}")
    if isinstance(patch_size, int):
        side = patch_size
        if side < 1:
            raise ValueError(f"patch_size in pixels must be >= 1, got {patch_size}")
    else:
        if not (math.isfinite(patch_size) and 0 < patch_size <= 1):
            raise ValueError(f"patch_size as a fraction of the image area must be in (0, 1], got "
                             f"{patch_size!r} (pass an int for a side in pixels)")
        side = max(1, round(math.sqrt(patch_size * h * w)))
    if side > min(h, w):
        raise ValueError(f"the patch ({side}x{side} pixels, patch_size={patch_size!r}) is larger than "
                         f"the image ({h}x{w}); use a smaller patch_size")
    return side


def patch_mask(side: int, shape: str, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> Tensor:
    """``(1, s, s)`` mask: ones (square) or the disc inscribed in the square (pixel centres)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown patch shape {shape!r}: use one of {', '.join(SHAPES)}")
    if shape == "square":
        return torch.ones(1, side, side, dtype=dtype, device=device)
    c = torch.arange(side, dtype=dtype, device=device) + 0.5 - side / 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    return (r2 <= (side / 2) ** 2).to(dtype)[None]


@dataclass(frozen=True)
class Placement:
    """Transformations for ``B`` images: ``centers`` ``(B, 2)`` as ``(c_x, c_y)`` in pixels,
    ``angles`` ``(B,)`` in degrees, ``scales`` ``(B,)``."""

    centers: Tensor
    angles: Tensor
    scales: Tensor

    @classmethod
    def at(cls, top_left: Sequence[tuple[float, float]] | Tensor, side: int, *, angle: float = 0.0,
           scale: float = 1.0, dtype: torch.dtype = torch.float32,
           device: torch.device | str = "cpu") -> "Placement":
        """Place the patch with its (untransformed) top-left corner at ``(row, col)`` per image."""
        tl = torch.as_tensor(top_left, dtype=dtype, device=device).reshape(-1, 2)
        centers = torch.stack([tl[:, 1] + side / 2, tl[:, 0] + side / 2], dim=1)
        b = centers.shape[0]
        return cls(centers, torch.full((b,), float(angle), dtype=dtype, device=device),
                   torch.full((b,), float(scale), dtype=dtype, device=device))


def sample_placements(n: int, side: int, image_hw: tuple[int, int], *, rotation: float,
                      scale: tuple[float, float], random_location: bool,
                      generator: torch.Generator, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Placement:
    """``n`` random transformations: angle ``U[-rotation, rotation]`` degrees, scale
    ``U[scale]``, and (with ``random_location``) an integer top-left corner drawn uniformly among
    those keeping the transformed square's bounding box inside the image; else the centre."""
    h, w = image_hw
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64, device=device)
    angles = (2 * u[:, 0] - 1) * rotation
    scales = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    rad = angles * (math.pi / 180)
    half = scales * side / 2 * (rad.cos().abs() + rad.sin().abs())  # half the bounding box
    coords = []
    for k, size in ((2, w), (3, h)):
        first = torch.ceil(half - side / 2)
        last = torch.floor(size - half - side / 2)
        fits = first <= last
        middle = torch.full_like(first, float((size - side) // 2))
        if random_location:
            pos = first + torch.floor(u[:, k] * (last - first + 1)).clamp(max=last - first)
            pos = torch.where(fits, pos, middle)
        else:
            pos = middle
        coords.append(pos + side / 2)
    centers = torch.stack(coords, dim=1)
    return Placement(centers.to(dtype), angles.to(dtype), scales.to(dtype))


def paste(x: Tensor, patch: Tensor, mask: Tensor, placement: Placement, *,
          bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[Tensor, Tensor]:
    """Paste ``patch`` ``(C, s, s)`` with ``mask`` ``(1, s, s)`` on each image of ``x``
    ``(B, C, H, W)`` under ``placement``; returns the images and the transformed mask
    ``(B, 1, H, W)`` (0 exactly where the image is unchanged). Differentiable in ``patch``."""
    b, ch, h, w = x.shape
    s = patch.shape[-1]
    c = placement.centers.to(x.dtype)
    rad = placement.angles.to(x.dtype) * (math.pi / 180)
    k = 1.0 / (s * placement.scales.to(x.dtype))  # (B,)
    cos, sin = rad.cos(), rad.sin()
    # v = (1/(sσ)) R^{-1} (D u + D 1 − 2c), D = diag(W, H), R^{-1} = [[cos, sin], [−sin, cos]]
    dx, dy = w - 2 * c[:, 0], h - 2 * c[:, 1]
    theta = torch.stack([
        torch.stack([k * cos * w, k * sin * h, k * (cos * dx + sin * dy)], dim=1),
        torch.stack([-k * sin * w, k * cos * h, k * (-sin * dx + cos * dy)], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, ch + 1, h, w], align_corners=False)
    src = torch.cat([patch * mask, mask.to(patch.dtype)], dim=0)[None].expand(b, -1, -1, -1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    region = out[:, ch:].clamp(0.0, 1.0)
    x_out = (x * (1 - region) + out[:, :ch]).clamp(*bounds)
    return torch.where(region > 0, x_out, x), region


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchResult:
    """A trained patch.

    Attributes:
        patch: ``(C, s, s)`` inside ``bounds`` (values outside the mask are unused).
        mask: ``(1, s, s)`` 1 where the patch is (square or disc).
        target_class: the class the patch aims at.
        success_rate: ``k̂ = target`` on the fitting set, over ``eval_samples`` random placements.
        history: the mean ``log Pr(target)`` of each block of steps (a tenth of the run).
        num_grads: backward passes, counted per example.
        rotation, scale, random_location: the transformation ranges it was trained under.
        bounds: the input box.
        attack: the configuration, as ``repr``.
    """

    patch: Tensor
    mask: Tensor
    target_class: int
    success_rate: float
    history: tuple[float, ...]
    num_grads: int
    rotation: float
    scale: tuple[float, float]
    random_location: bool
    bounds: tuple[float, float]
    attack: str

    @property
    def side(self) -> int:
        return int(self.patch.shape[-1])

    def sample_placements(self, n: int, image_hw: tuple[int, int], *,
                          generator: torch.Generator) -> Placement:
        return sample_placements(n, self.side, image_hw, rotation=self.rotation, scale=self.scale,
                                 random_location=self.random_location, generator=generator,
                                 dtype=self.patch.dtype, device=self.patch.device)

    def apply(self, x: Tensor, placement: Placement | None = None, *,
              generator: torch.Generator | None = None) -> Tensor:
        """Paste the patch on ``x`` ``(B, C, H, W)``: under ``placement`` if given, else under
        random transformations from the training ranges (``generator``, default seeded with 0)."""
        _check_image_batch(x, self.patch)
        if placement is None:
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(0)
            placement = self.sample_placements(x.shape[0], (x.shape[2], x.shape[3]),
                                               generator=generator)
        return paste(x, self.patch.to(x.dtype), self.mask.to(x.dtype), placement,
                     bounds=self.bounds)[0]


def _check_image_batch(x: Tensor, patch: Tensor | None = None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"adversarial patches need images of shape (B, C, H, W), got {shape}")
    if patch is not None:
        if patch.dim() != 3 or patch.shape[0] != x.shape[1] or patch.shape[1] != patch.shape[2]:
            raise ValueError(f"patch must have shape (C, s, s) with C = {x.shape[1]} channels, got "
                             f"{tuple(patch.shape)}")
        if patch.shape[-1] > min(x.shape[2], x.shape[3]):
            raise ValueError(f"the patch ({patch.shape[-1]}x{patch.shape[-1]}) is larger than the "
                             f"image ({x.shape[2]}x{x.shape[3]})")
        if patch.device != x.device:
            raise ValueError(f"patch is on {patch.device} but x is on {x.device}")


def _reference(model: nn.Module, x: Tensor, y: Tensor | None, target: int,
               bounds: tuple[float, float], generator: torch.Generator | None) -> Tensor:
    """Validate; return ``(B,)`` bool, the points whose reference label is not the target."""
    check_model(model)
    _check_image_batch(x)
    return reference_labels(model, x, y, target, bounds, generator)[1]


def _success(model: nn.Module, x: Tensor, patch: Tensor, mask: Tensor, target: int, *,
             samples: int, rotation: float, scale: tuple[float, float], random_location: bool,
             bounds: tuple[float, float], generator: torch.Generator) -> float:
    hits = 0
    hw = (x.shape[2], x.shape[3])
    with torch.no_grad():
        for _ in range(samples):
            for i in range(0, x.shape[0], EVAL_BATCH):
                xb = x[i:i + EVAL_BATCH]
                pl = sample_placements(xb.shape[0], patch.shape[-1], hw, rotation=rotation,
                                       scale=scale, random_location=random_location,
                                       generator=generator, dtype=x.dtype, device=x.device)
                xp, _ = paste(xb, patch, mask, pl, bounds=bounds)
                hits += int((model(xp).argmax(dim=1) == target).sum())
    return hits / (samples * x.shape[0])


def patch_success(model: nn.Module, x: Tensor, patch: Tensor | PatchResult, *,
                  target: int | None = None, mask: Tensor | None = None, y: Tensor | None = None,
                  samples: int = 8, rotation: float | None = None,
                  scale: tuple[float, float] | None = None, random_location: bool | None = None,
                  bounds: tuple[float, float] | None = None,
                  generator: torch.Generator | None = None) -> float:
    """The patch's success rate on ``x`` (use held-out data): the fraction of (point, placement)
    pairs, ``samples`` random placements per point, that the model classifies as ``target``, over
    the points whose reference label (``y``, else the clean prediction) is not ``target``.

    ``patch`` is a :class:`PatchResult` (its mask, target, transformation ranges and bounds are the
    defaults) or a ``(C, s, s)`` tensor (defaults: a square mask, no rotation, unit scale, random
    location, bounds ``(0, 1)``). Changes nothing it was given; the generator defaults to one
    seeded with 0.
    """
    if isinstance(patch, PatchResult):
        res = patch
        target = res.target_class if target is None else target
        mask = res.mask if mask is None else mask
        rotation = res.rotation if rotation is None else rotation
        scale = res.scale if scale is None else scale
        random_location = res.random_location if random_location is None else random_location
        bounds = res.bounds if bounds is None else bounds
        patch = res.patch
    if target is None:
        raise ValueError("patch_success needs target= (the class the patch aims at)")
    target = class_index(target, "target_class", optional=False)
    check_int("samples", samples)
    rotation = 0.0 if rotation is None else rotation
    scale = (1.0, 1.0) if scale is None else scale
    random_location = True if random_location is None else random_location
    bounds = ThreatModel(norm="linf", eps=0.0, bounds=bounds if bounds is not None else (0.0, 1.0)).bounds
    _check_ranges(rotation, scale)
    if not isinstance(patch, Tensor):
        raise TypeError(f"patch must be a torch.Tensor (C, s, s) or a PatchResult, got "
                        f"{type(patch).__name__}")
    with eval_mode(check_model(model)):
        counted = _reference(model, x, y, target, bounds, generator)
        _check_image_batch(x, patch)
        mask = torch.ones_like(patch[:1]) if mask is None else mask
        if tuple(mask.shape) != (1, *patch.shape[1:]):
            raise ValueError(f"mask must have shape (1, s, s) = {(1, *patch.shape[1:])}, got "
                             f"{tuple(mask.shape)}")
        if float(patch.min()) < bounds[0] or float(patch.max()) > bounds[1]:
            raise ValueError(f"patch has values outside the bounds {bounds}")
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        return _success(model, x[counted], patch.to(x.dtype), mask.to(x.dtype), target,
                        samples=samples, rotation=rotation, scale=scale,
                        random_location=random_location, bounds=bounds, generator=generator)


def _check_ranges(rotation: Any, scale: Any) -> None:
    check_number("rotation (degrees)", rotation, low_open=False)
    try:
        lo, hi = (float(s) for s in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (min, max), got {scale!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"scale must be a pair 0 < min <= max, got {scale!r}")


# -- the attack -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AdversarialPatch(Attack):
    """A universal targeted patch (Brown et al. 2017) trained by expectation over transformation.

    Each step: a minibatch of ``batch_size`` images (drawn among the points whose reference label
    is not the target), one random placement per image (location, rotation in
    ``[-rotation, rotation]`` degrees, scale in ``scale``), the patch pasted with its mask, and an
    Adam step (learning rate ``step_size``) ascending ``mean_i log Pr(t | A(p, x_i, τ_i))``; the
    patch is clipped to ``bounds`` after each step. It starts uniformly random in the bounds.

    Args:
        target_class: the class the patch aims at.
        patch_size: fraction of the image area in ``(0, 1]`` (float) or the side in pixels (int).
        shape: ``"square"`` or ``"circle"``.
        steps: Adam steps; batch_size: images per step; step_size: Adam's learning rate.
        rotation: the largest rotation in degrees; scale: ``(min, max)`` scale factors.
        random_location: random placements (else the patch sits at the image centre).
        eval_samples: placements per fitting point for ``success_rate``.
        bounds: the input box.

    Calling it on ``(model, x, y=None, *, generator=None)``, ``x`` ``(N, C, H, W)``, returns a
    :class:`PatchResult`; the generator draws the minibatches, placements and the initial patch.

    Example:
        >>> result = AdversarialPatch(target_class=8, patch_size=0.1)(model, x_train)
        >>> x_patched = result.apply(x_test, generator=torch.Generator().manual_seed(1))
    """

    kind: ClassVar[str] = "universal"
    access: ClassVar[str] = "gradients"

    target_class: int
    patch_size: float | int = 0.1
    shape: str = "square"
    steps: int = 500
    batch_size: int = 64
    step_size: float = 0.05
    rotation: float = 20.0
    scale: tuple[float, float] = (0.9, 1.1)
    random_location: bool = True
    eval_samples: int = 4
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        class_index(self.target_class, "target_class", optional=False)
        patch_side(self.patch_size, (1 << 30, 1 << 30))  # type and range; the image size is checked later
        if self.shape not in SHAPES:
            raise ValueError(f"unknown patch shape {self.shape!r}: use one of {', '.join(SHAPES)}")
        check_int("steps", self.steps)
        check_int("batch_size", self.batch_size)
        check_number("step_size", self.step_size)
        _check_ranges(self.rotation, self.scale)
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        if not isinstance(self.random_location, bool):
            raise ValueError(f"random_location must be True or False, got {self.random_location!r}")
        check_int("eval_samples", self.eval_samples)
        bounds_field(self)

    @needs_autograd
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> PatchResult:
        target = self.target_class
        with eval_mode(check_model(model)):
            counted = _reference(model, x, y, target, self.bounds, generator)
            hw = (x.shape[2], x.shape[3])
            side = patch_side(self.patch_size, hw)
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(0)
            x = x.detach()[counted]
            lo, hi = self.bounds
            mask = patch_mask(side, self.shape, dtype=x.dtype, device=x.device)
            patch = lo + (hi - lo) * torch.rand(x.shape[1], side, side, generator=generator,
                                                dtype=x.dtype, device=x.device)
            m1, m2 = torch.zeros_like(patch), torch.zeros_like(patch)
            beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
            block = max(1, self.steps // 10)
            history: list[float] = []
            running = 0.0
            grads = 0
            aim = torch.full((self.batch_size,), target, dtype=torch.long, device=x.device)
            with torch.enable_grad():
                for step in range(self.steps):
                    idx = torch.randint(0, x.shape[0], (self.batch_size,), generator=generator,
                                        device=x.device)
                    pl = sample_placements(self.batch_size, side, hw, rotation=self.rotation,
                                           scale=self.scale, random_location=self.random_location,
                                           generator=generator, dtype=x.dtype, device=x.device)
                    p = patch.detach().requires_grad_(True)
                    xp, _ = paste(x[idx], p, mask, pl, bounds=self.bounds)
                    # log Pr(t | ·) = −CE(t); for an ensemble fused in loss, the members' weighted sum
                    logp = objective(model, xp, aim, aim, cross_entropy)[0].mean()
                    g = input_grad(logp, p)
                    grads += self.batch_size
                    running += float(logp.detach())
                    if (step + 1) % block == 0 or step + 1 == self.steps:
                        history.append(running / ((step % block) + 1))
                        running = 0.0
                    with torch.no_grad():  # Adam ascent (torch.optim.Adam's update), then clip
                        t = step + 1
                        m1 = beta1 * m1 + (1 - beta1) * g
                        m2 = beta2 * m2 + (1 - beta2) * g * g
                        denom = (m2 / (1 - beta2 ** t)).sqrt() + adam_eps
                        patch = (patch + self.step_size * (m1 / (1 - beta1 ** t)) / denom).clamp(lo, hi)
            if not bool(torch.isfinite(patch).all()):
                raise FloatingPointError("the patch became NaN/Inf: the model's gradient is NaN or "
                                         "Inf; check the model for non-finite operations")
            rate = _success(model, x, patch, mask, target, samples=self.eval_samples,
                            rotation=self.rotation, scale=self.scale,
                            random_location=self.random_location, bounds=self.bounds,
                            generator=generator)
            log.info("patch %dx%d -> class %d: fitting-set success %.4f", side, side, target, rate)
        return PatchResult(patch=patch, mask=mask, target_class=target, success_rate=rate,
                           history=tuple(history), num_grads=grads, rotation=float(self.rotation),
                           scale=self.scale, random_location=self.random_location,
                           bounds=self.bounds, attack=config_repr(self))


@dataclass(frozen=True)
class SizeRow:
    """One row of :func:`success_vs_size`."""

    patch_size: float | int
    side: int
    area_fraction: float
    fit_success: float
    success: float


def success_vs_size(config: AdversarialPatch, model: nn.Module, x_fit: Tensor, x_eval: Tensor, *,
                    sizes: Sequence[float | int], y_fit: Tensor | None = None,
                    y_eval: Tensor | None = None, samples: int = 8,
                    generator: torch.Generator | None = None) -> tuple[SizeRow, ...]:
    """Train one patch per size (``config`` with ``patch_size`` replaced) on ``x_fit`` and measure
    its success on held-out ``x_eval`` with :func:`patch_success`. Each size uses a generator
    seeded from ``generator`` (default seed 0), so rows do not depend on the order of ``sizes``."""
    if len(sizes) == 0:
        raise ValueError("sizes is empty; pass patch sizes such as [0.05, 0.1, 0.2]")
    if generator is None:
        generator = torch.Generator(device=x_fit.device).manual_seed(0)
    seeds = torch.randint(0, 2**62, (len(sizes),), generator=generator, device=x_fit.device).tolist()
    rows = []
    hw = (x_fit.shape[-2], x_fit.shape[-1])
    for size, seed in zip(sizes, seeds):
        cfg = dataclasses.replace(config, patch_size=size)
        side = patch_side(size, hw)
        g = torch.Generator(device=x_fit.device).manual_seed(int(seed))
        res = cfg(model, x_fit, y_fit, generator=g)
        rate = patch_success(model, x_eval, res, y=y_eval, samples=samples, generator=g)
        rows.append(SizeRow(patch_size=size, side=side, area_fraction=side * side / (hw[0] * hw[1]),
                            fit_success=res.success_rate, success=rate))
    return tuple(rows)
