"""``advlab certify``: certified robustness of a saved model, set against what attacks find.

Two certificates (:mod:`advlab.certify`):

* ``smoothing``: randomized smoothing (Cohen, Rosenfeld & Kolter 2019). The smoothed classifier's
  prediction with abstention and a certified L2 radius per point (Clopper-Pearson bound at level
  ``1 − alpha``); certified accuracy at each radius.
* ``ibp``: interval bound propagation (Gowal et al. 2018) on the model itself: a verified L∞
  radius per point; verified accuracy at each ε beside the robust accuracy that PGD leaves at
  the same ε (the verified fraction is a lower bound, PGD's an upper bound, so they must bracket
  the truth), and the count of verified points PGD broke (a broken promise: it must be 0).

Writes ``certify.json`` (per point: label, prediction, radius; the table; provenance),
``certify.md``, ``certified_accuracy.png`` and ``index.html``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from advlab._io import atomic_write_text
from advlab.runs._common import ModelSource, describe, model_bounds, open_model, say

METHODS = ("smoothing", "ibp")
DEFAULT_RADII = {"smoothing": (0.0, 0.25, 0.5, 0.75, 1.0), "ibp": (0.0, 0.01, 0.02, 0.05, 0.1)}


@dataclass
class CertifyOutput:
    rows: list[dict[str, Any]]
    radius: torch.Tensor           # (n,) certified radius per point (0: not certified or wrong)
    files: dict[str, Path] = field(default_factory=dict)


def certify_points(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str,
                   radii: Sequence[float], sigma: float = 0.25, samples: int = 1000, n0: int = 100,
                   alpha: float = 0.001, bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                   batch_size: int = 1000, pgd_steps: int = 20) -> tuple[list[dict[str, Any]], torch.Tensor, dict[str, Any]]:
    """The rows of the certify table, each point's radius and extra facts, for ``model`` on
    ``(x, y)``: the library part of :func:`certify_job` (and of the spec kind ``certify``).

    Every row states its denominator: ``certified`` points (correct and certified at that radius)
    over all ``n`` points.
    """
    from advlab.certify import SmoothedClassifier, verified_radius

    if method not in METHODS:
        raise ValueError(f"unknown certification method {method!r}: use one of {', '.join(METHODS)}")
    radii = [float(r) for r in radii]
    if not radii or any(r < 0 or not math.isfinite(r) for r in radii) or radii != sorted(radii):
        raise ValueError(f"radii must be finite, >= 0 and increasing, got {radii}")
    n = int(x.shape[0])
    g = torch.Generator(device=x.device).manual_seed(seed)
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    if method == "smoothing":
        smoothed = SmoothedClassifier(sigma=sigma, n0=n0, n=samples, alpha=alpha, batch_size=batch_size)
        cert = smoothed.certify(model, x, generator=g)
        seconds = time.perf_counter() - t0
        correct = cert.pred == y
        radius = torch.where(correct, cert.radius, torch.zeros_like(cert.radius)).double()
        extra.update(abstained=int((cert.pred < 0).sum()), sigma=sigma, samples=samples, n0=n0, alpha=alpha,
                     seconds_per_point=seconds / max(n, 1))
        rows = [{"radius": r, "norm": "l2", "n": n,
                 "certified": int((correct & (cert.radius >= r) & (cert.radius > 0 if r == 0 else True)).sum())}
                for r in radii]
        for row in rows:
            row["certified_accuracy"] = row["certified"] / n if n else float("nan")
        extra["pred"] = cert.pred.tolist()
        extra["correct"] = correct.tolist()
        return rows, radius, extra
    # ibp: the verified radius of the model itself, and PGD beside it at each ε
    from advlab.attacks import PGD

    eps_max = max(max(radii), 1e-3) * 2
    radius = verified_radius(model, x, y, bounds=bounds, eps_max=eps_max, tol=eps_max / 256).double()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    rows = []
    broken_promises = 0
    for r in radii:
        from advlab.certify import verified_margin

        if r > 0:
            margin = verified_margin(model, x, y, r, bounds=bounds)
            verified = clean_ok & (margin > 0)
            res = PGD(eps=r, steps=pgd_steps, restarts=1, bounds=bounds, early_stop=True)(
                model, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))
            pgd_robust = clean_ok & ~res.success
            broken = int((verified & res.success).sum())
        else:
            verified, pgd_robust, broken = clean_ok, clean_ok, 0
        broken_promises += broken
        rows.append({"radius": r, "norm": "linf", "n": n, "certified": int(verified.sum()),
                     "certified_accuracy": float(verified.float().mean()) if n else float("nan"),
                     "pgd_robust_accuracy": float(pgd_robust.float().mean()) if n else float("nan"),
                     "verified_broken_by_pgd": broken})
    extra.update(seconds_per_point=seconds / max(n, 1), pgd_steps=pgd_steps, broken_promises=broken_promises,
                 correct=clean_ok.tolist())
    return rows, radius, extra


def certify_job(*, checkpoint: ModelSource, out: str | Path, method: str = "smoothing",
                radii: Sequence[float] | None = None, sigma: float = 0.25, samples: int = 1000, n0: int = 100,
                alpha: float = 0.001, n: int = 200, batch_size: int = 1000, seed: int = 0, pgd_steps: int = 20,
                data: str | None = None, data_dir: str | None = None, download: bool = False,
                quiet: bool = False, device: str = "cpu") -> CertifyOutput:
    """Certify a saved model on ``n`` test points (see the module docstring) and write the report."""
    from advlab.reports import write_report

    if method not in METHODS:
        raise ValueError(f"unknown certification method {method!r}: use one of {', '.join(METHODS)}")
    radii = list(radii) if radii is not None else list(DEFAULT_RADII[method])
    model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n, device=device)
    bounds = model_bounds(card)
    what = (f"randomized smoothing (σ = {sigma:g}, n = {samples} samples, α = {alpha:g})" if method == "smoothing"
            else "interval bound propagation")
    say(f"certifying {card.architecture} on {len(ds)} {ds.name} test images by {what}", quiet)
    rows, radius, extra = certify_points(model, ds.x, ds.y, method=method, radii=radii, sigma=sigma,
                                         samples=samples, n0=n0, alpha=alpha, bounds=bounds, seed=seed,
                                         batch_size=batch_size, pgd_steps=pgd_steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "certify.json", "table": out / "certify.md", "plot": out / "certified_accuracy.png"}
    norm = "L2" if method == "smoothing" else "L∞"
    lines = [f"# Certified robustness: {card.architecture} on {ds.name}", "",
             f"Method: {what}. n = {len(ds)} test points; a point counts when it is classified correctly "
             f"and certified at the radius (denominator: all {len(ds)} points). "
             f"{extra['seconds_per_point'] * 1000:.1f} ms per point.", ""]
    if method == "smoothing":
        lines += [f"The smoothed classifier abstained on {extra['abstained']} of {len(ds)} points.", "",
                  f"| {norm} radius | certified accuracy | certified / n |", "|---:|---:|---:|"]
        lines += [f"| {r['radius']:g} | {100 * r['certified_accuracy']:.1f}% | {r['certified']}/{r['n']} |" for r in rows]
    else:
        lines += [f"| {norm} ε | verified accuracy (IBP, lower bound) | PGD-{extra['pgd_steps']} robust accuracy "
                  "(upper bound) | verified points PGD broke |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['radius']:g} | {100 * r['certified_accuracy']:.1f}% ({r['certified']}/{r['n']}) | "
                  f"{100 * r['pgd_robust_accuracy']:.1f}% | {r['verified_broken_by_pgd']} |" for r in rows]
    atomic_write_text(files["table"], "\n".join(lines) + "\n")
    payload = {"method": method, "rows": rows, "radius": radius.tolist(), "y": ds.y.tolist(),
               **{k: v for k, v in extra.items()},
               "provenance": {"checkpoint": describe(checkpoint), "dataset": ds.name, "model": card.architecture,
                              "device": str(ds.x.device), "seed": seed}}
    atomic_write_text(files["json"], json.dumps(payload, indent=1))
    _curve(rows, radius, method=method, path=files["plot"], title=f"{card.architecture} on {ds.name}")
    files["html"] = write_report(out, evaluation=_as_evaluation(rows, extra, method, len(ds), card, ds),
                                 figures=[files["plot"].name],
                                 title=f"Certified robustness of {card.architecture} on {ds.name}",
                                 notes=[lines[2]] + ([lines[4]] if method == "smoothing" else []))
    if not quiet:
        print("\n".join(lines))
    return CertifyOutput(rows=rows, radius=radius, files=files)


def _as_evaluation(rows: list[dict[str, Any]], extra: dict[str, Any], method: str, n: int, card: Any,
                   ds: Any) -> Any:
    """The table as evaluation rows (robust accuracy = certified accuracy), for the report page:
    certified points count as robust, over the same denominators as every evaluation."""
    from advlab.evaluation import Evaluation
    from advlab.evaluation.robustness import EvalRow

    clean = rows[0]["certified"]  # radius 0: classified correctly (smoothing: and not abstained)
    label = (f"certified, smoothing σ={extra['sigma']:g}" if method == "smoothing" else "verified, IBP")
    out = []
    for r in rows:
        out.append(EvalRow(attack=label, eps=r["radius"], norm=r["norm"], n=n, n_correct=clean,
                           n_robust=r["certified"], clean_accuracy=clean / n if n else float("nan"),
                           robust_accuracy=r["certified_accuracy"],
                           success_rate=1 - r["certified"] / clean if clean else float("nan"),
                           median_norm=float("nan"), mean_norm=float("nan"), grads=0,
                           seconds=extra["seconds_per_point"] * n, config=method))
        if method == "ibp":
            robust = round(r["pgd_robust_accuracy"] * n)
            out.append(EvalRow(attack=f"PGD-{extra['pgd_steps']}", eps=r["radius"], norm="linf", n=n,
                               n_correct=clean, n_robust=robust, clean_accuracy=clean / n if n else float("nan"),
                               robust_accuracy=r["pgd_robust_accuracy"],
                               success_rate=1 - robust / clean if clean else float("nan"),
                               median_norm=float("nan"), mean_norm=float("nan"), grads=0, seconds=0.0,
                               config="upper bound beside the certificate"))
    return Evaluation(rows=out, provenance={"dataset": ds.name, "model": card.architecture, "method": method})


def _curve(rows: list[dict[str, Any]], radius: torch.Tensor, *, method: str, path: Path, title: str) -> None:
    """Certified accuracy against the radius: the exact step curve from the per-point radii, with
    the table's radii marked (and PGD's robust accuracy for IBP)."""
    from advlab.reports._figure import new_figure, save_png


    n = max(int(radius.numel()), 1)
    r_sorted = torch.sort(radius[radius > 0]).values.tolist()
    top = max([rows[-1]["radius"]] + r_sorted[-1:]) * 1.05 or 1.0
    xs, ys = [0.0], [len(r_sorted) / n]
    for i, r in enumerate(r_sorted):
        xs += [r, r]
        ys += [(len(r_sorted) - i) / n, (len(r_sorted) - i - 1) / n]
    xs.append(top)
    ys.append(ys[-1])
    fig = new_figure((6, 4))
    ax = fig.subplots()
    ax.plot(xs, [100 * v for v in ys], label="certified (per-point radii)", color="tab:blue")
    ax.scatter([r["radius"] for r in rows], [100 * r["certified_accuracy"] for r in rows], color="tab:blue", zorder=3)
    if method == "ibp":
        ax.plot([r["radius"] for r in rows], [100 * r["pgd_robust_accuracy"] for r in rows], "o--",
                color="tab:red", label="PGD robust accuracy (upper bound)")
    ax.set_xlabel("L2 radius" if method == "smoothing" else "L∞ ε")
    ax.set_ylabel(f"accuracy (% of {n} points)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, top)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_png(fig, path)


__all__ = ["CertifyOutput", "METHODS", "certify_job", "certify_points"]
