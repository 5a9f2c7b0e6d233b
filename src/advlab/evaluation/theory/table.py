"""The seed's table: latent, in-distribution and unconstrained robustness per classifier next to
Theorem 1's upper bounds, with the data behind it (:class:`BoundsTable`, :func:`bounds_table`);
optionally Theorem 2 (the projected classifier, :mod:`.projected`) and Theorem 3 (transfer,
:mod:`.transfer`) as two more sections."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab.attacks.contract import AttackLike
from advlab._checks import check_int, check_model
from advlab.evaluation._json import dump_json
from advlab.evaluation.robustness import clean_predictions, provenance
from advlab.evaluation.theory.bounds import (_check_lipschitz, fawzi_bound, median_upper_bound,
                                             median_upper_bound_classwise)
from advlab.evaluation.theory.generator import Generator, _check_generator, _check_shapes, _generator_device
from advlab.evaluation.theory.latent import LatentSearch
from advlab.evaluation.theory.lipschitz import LipschitzEstimate, lipschitz_estimate
from advlab.evaluation.theory.measure import GenerativeRobustness, measure_robustness
from advlab.evaluation.theory.projected import ProjectedClassifier, ProjectedRobustness, measure_projected
from advlab.evaluation.theory.transfer import TransferRobustness, measure_transfer

log = logging.getLogger(__name__)

#: The rows of :class:`BoundsTable`, in order: (key, label).
ROWS: tuple[tuple[str, str], ...] = (
    ("error_rate", "Error rate (real test data)"),
    ("latent", "Robustness in the Z-space ‖r‖₂"),
    ("r_in", "In-distribution robustness r_in"),
    ("r_unc", "Unconstrained robustness r_unc"),
)
BOUND_COLUMN = "Upper bound (Thm 1, median)"


@dataclass
class BoundsTable:
    """The seed's table for several classifiers, with the data behind it.

    Attributes:
        lipschitz: the ``L`` used in the bounds; ``lipschitz_estimate`` how it was obtained (or None
            when ``L`` was given).
        results: classifier name -> :class:`GenerativeRobustness` (the columns, in order).
        error_rates: classifier name -> error on real test data (optional row).
        provenance: versions, revision, seed and settings (see :func:`advlab.evaluation.provenance`).
        projected: classifier name -> :class:`ProjectedRobustness` (Theorem 2; empty unless asked for).
        transfer: pair name ``"f & h"`` -> :class:`TransferRobustness` (Theorem 3; empty unless asked).
        transfer_etas: the radii of Theorem 3's rows (input metric; default
            :meth:`TransferRobustness.default_etas`).
    """

    lipschitz: float
    results: dict[str, GenerativeRobustness]
    lipschitz_estimate: LipschitzEstimate | None = None
    error_rates: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    projected: dict[str, ProjectedRobustness] = field(default_factory=dict)
    transfer: dict[str, TransferRobustness] = field(default_factory=dict)
    transfer_etas: list[float] | None = None

    def theorem3_etas(self) -> np.ndarray:
        """The η of Theorem 3's rows and figure: ``transfer_etas``, or 8 radii up to ``2 L √(ln 2π)``."""
        if self.transfer_etas is not None:
            return np.asarray(self.transfer_etas, dtype=float)
        top = 2.0 * median_upper_bound(self.lipschitz)
        return np.linspace(top / 8, top, 8)

    @property
    def columns(self) -> list[str]:
        return [BOUND_COLUMN, *self.results]

    @property
    def rows(self) -> list[str]:
        return [label for key, label in ROWS if key != "error_rate" or self.error_rates]

    def bound(self, quantity: str) -> float:
        """The Theorem 1 upper bound on the median of ``quantity`` (``latent``: L = 1)."""
        if quantity == "latent":
            return median_upper_bound(1.0)
        if quantity in ("r_in", "r_unc"):
            return median_upper_bound(self.lipschitz)
        raise KeyError(quantity)

    def classwise_bound(self, name: str, quantity: str = "r_in") -> float:
        """Eq. (4)'s median bound for classifier ``name`` with its class frequencies under ``g``."""
        probs = self.results[name].class_probs
        return median_upper_bound_classwise(1.0 if quantity == "latent" else self.lipschitz,
                                            class_probs=probs)

    def cdf(self, name: str, etas: Sequence[float] | np.ndarray | None = None, *,
            quantity: str = "r_in") -> tuple[np.ndarray, np.ndarray]:
        """The empirical CDF ``P(quantity <= η)`` of one classifier at ``etas`` (default: 200 points
        up to twice the bound); points where nothing was found count as never below η."""
        if etas is None:
            etas = np.linspace(0.0, 2.0 * self.bound(quantity), 200)
        etas = np.asarray(etas, dtype=float)
        v = self.results[name].values(quantity).double().cpu().numpy()
        return etas, (v[None, :] <= etas[:, None]).mean(axis=1)

    def bound_curve(self, etas: Sequence[float] | np.ndarray, *, quantity: str = "r_in") -> np.ndarray:
        """Eq. (6) at ``etas``: the lower bound on ``P(r_in <= η)`` (``latent``: with L = 1)."""
        return np.asarray(fawzi_bound(np.asarray(etas, dtype=float),
                                      1.0 if quantity == "latent" else self.lipschitz))

    def fraction_below_bound(self, name: str, quantity: str = "r_in") -> float:
        """Empirical ``P(quantity <= median bound)``; Theorem 1 says the true value is >= 1/2."""
        v = self.results[name].values(quantity)
        return float((v <= self.bound(quantity)).float().mean())

    def to_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name, res in self.results.items():
            summary[name] = {q: res.stats(q) for q in ("latent", "r_in", "r_unc", "r_unc_attack",
                                                       "r_in_latent_minimal")}
            summary[name]["relative"] = {q: res.stats(q, relative=True) for q in ("latent", "r_in", "r_unc")}
            summary[name]["classwise_bound_r_in"] = self.classwise_bound(name)
            summary[name]["classwise_bound_latent"] = self.classwise_bound(name, "latent")
            summary[name]["fraction_r_in_below_bound"] = self.fraction_below_bound(name)
            summary[name]["fraction_latent_below_bound"] = self.fraction_below_bound(name, "latent")
            summary[name]["attack_alone_le_r_in"] = res.attack_alone_le_r_in
            summary[name]["max_class_prob"] = max(res.class_probs)
            if name in self.error_rates:
                summary[name]["error_rate"] = self.error_rates[name]
        out = {"lipschitz": self.lipschitz,
               "lipschitz_estimate": self.lipschitz_estimate.to_dict() if self.lipschitz_estimate else None,
               "bounds": {"latent": self.bound("latent"), "r_in": self.bound("r_in"),
                          "r_unc": self.bound("r_unc")},
               "summary": summary, "per_point": {k: v.to_dict() for k, v in self.results.items()},
               "provenance": self.provenance}
        if self.projected:  # new sections only when measured: a Theorem 1 table's JSON is unchanged
            out["theorem2"] = {"summary": {k: v.summary() for k, v in self.projected.items()},
                               "per_point": {k: v.to_dict() for k, v in self.projected.items()}}
        if self.transfer:
            etas = self.theorem3_etas()
            out["theorem3"] = {"etas": etas.tolist(),
                               "summary": {k: v.summary(etas) for k, v in self.transfer.items()},
                               "per_point": {k: v.to_dict() for k, v in self.transfer.items()}}
        return out

    def to_json(self, path: str | None = None) -> str:
        return dump_json(self.to_dict(), path, default=_json_default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoundsTable:
        """Rebuild a table from :meth:`to_dict` output, so reports render stored numbers."""
        est = data.get("lipschitz_estimate")
        summary = data.get("summary", {})
        t2 = data.get("theorem2", {}).get("per_point", {})
        t3 = data.get("theorem3", {})
        return cls(lipschitz=float(data["lipschitz"]),
                   results={name: GenerativeRobustness.from_dict(v) for name, v in data["per_point"].items()},
                   lipschitz_estimate=LipschitzEstimate.from_dict(est) if est else None,
                   error_rates={name: float(v["error_rate"]) for name, v in summary.items() if "error_rate" in v},
                   provenance=dict(data.get("provenance", {})),
                   projected={k: ProjectedRobustness.from_dict(v) for k, v in t2.items()},
                   transfer={k: TransferRobustness.from_dict(v) for k, v in t3.get("per_point", {}).items()},
                   transfer_etas=[float(e) for e in t3["etas"]] if "etas" in t3 else None)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str]) -> BoundsTable:
        """Read :meth:`to_json` output: a JSON string or the path of a file holding one."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))

    def to_markdown(self, *, relative: bool = False) -> str:
        """The seed's table: median (mean) per classifier, the bound column first.

        ``relative=True`` divides each point's value by ``||x||_2`` (latent: ``||z||_2``) before the
        median, as normalised robustness; the bound column is then divided by the median norm
        (approximate, marked ≈).
        """
        if not self.results:
            return "(no classifiers)"
        names = list(self.results)
        first = next(iter(self.results.values()))
        head = [f"| | {BOUND_COLUMN} | " + " | ".join(names) + " |",
                "|---|---:|" + "---:|" * len(names)]
        lines = []
        if self.error_rates:
            lines.append(f"| {ROWS[0][1]} | – | " + " | ".join(
                f"{100 * self.error_rates[n]:.1f}%" if n in self.error_rates else "–" for n in names) + " |")
        for key, label in ROWS[1:]:
            cells = []
            for n in names:
                s = self.results[n].stats(key, relative=relative)
                cell = _cell(s)
                if s["found"] < self.results[n].n:
                    cell += f" [{s['found']}/{self.results[n].n} found]"
                cells.append(cell)
            b = self.bound(key)
            if relative:
                norm = first.z_norm if key == "latent" else first.x_norm
                bcell = f"≈{_fmt(b / float(norm.median()))}"
            else:
                bcell = _fmt(b)
            lines.append(f"| {label} | {bcell} | " + " | ".join(cells) + " |")
        if not relative:
            lines.append("| Median bound, eq. (4) with f's class frequencies (r_in) | – | " + " | ".join(
                _fmt(self.classwise_bound(n)) for n in names) + " |")
            lines.append("| P(r_in ≤ bound) measured (theorem: ≥ 0.5) | – | " + " | ".join(
                f"{self.fraction_below_bound(n):.2f}" for n in names) + " |")
            lines.append("| r_in from the latent-minimal r alone (no input-metric search) | – | " + " | ".join(
                _cell(self.results[n].stats("r_in_latent_minimal")) for n in names) + " |")
            lines.append("| median r_in / r_unc | – | " + " | ".join(
                _fmt(float(np.median((self.results[n].r_in / self.results[n].r_unc).cpu().numpy())))
                for n in names) + " |")
            lines.append("| r_unc ≤ r_in by the attacks alone | – | " + " | ".join(
                f"{100 * self.results[n].attack_alone_le_r_in:.0f}%" for n in names) + " |")
            lines.append("| largest class frequency under g (eq. 6 needs ≤ 0.5) | – | " + " | ".join(
                f"{max(self.results[n].class_probs):.2f}" for n in names) + " |")
        est = self.lipschitz_estimate
        how = (f"empirical lower estimate (pairs {est.pair_ratio:.4g}, Jacobian {est.jacobian_norm:.4g})"
               if est is not None else "given")
        kind = "relative (‖r‖/‖x‖, latent ‖r‖/‖z‖)" if relative else "absolute L2"
        note = (f"Median (mean) of {kind} robustness over n = {first.n} samples x = g(z), z ~ N(0, I); "
                f"label = f(g(z)). L = {self.lipschitz:.4g} ({how}); bound = L·√(ln 2π) "
                f"(Z-space: L = 1).\n\n")
        text = note + "\n".join(head + lines) + "\n"
        if not relative and self.projected:
            text += "\n" + self._theorem2_markdown()
        if not relative and self.transfer:
            text += "\n" + self._theorem3_markdown()
        return text

    def _theorem2_markdown(self) -> str:
        names = list(self.projected)
        res = self.projected
        cols = " | ".join(names)

        def row(label: str, cells: list[str]) -> str:
            return f"| {label} | " + " | ".join(cells) + " |"

        def med(t: Tensor) -> str:
            return _fmt(float(np.median(t.double().cpu().numpy())))

        lines = [f"| | {cols} |", "|---|" + "---:|" * len(names)]
        lines.append(row("median ½·r_in(f) (Theorem 2: a lower bound on r_unc(f̃))",
                         [med(0.5 * res[n].r_in) for n in names]))
        lines.append(row("median r_unc(f̃) measured", [med(res[n].r_unc_projected) for n in names]))
        lines.append(row("median r_unc(f), the same f unprojected (Theorem 1 table)",
                         [_fmt(self.results[n].stats("r_unc")["median"]) if n in self.results else "–"
                          for n in names]))
        lines.append(row("P(r_unc(f̃) ≥ ½·r_in) measured (theorem: 1)",
                         [f"{res[n].fraction_half():.2f}" for n in names]))
        lines.append(row("… against r_in tightened by f̃'s projections",
                         [f"{res[n].fraction_half(tight=True):.2f}" for n in names]))
        lines.append(row("violations: total (loose r_in / inexact projection) of measured",
                         [f"{v['total']} ({v['loose_r_in']} / {v['projection']}) of {v['measured']}"
                          for v in (res[n].violations() for n in names)]))
        lines.append(row("r_unc(f̃) / r_in: min / median / max", [
            " / ".join(_fmt(res[n].summary()["ratio"][k]) for k in ("min", "median", "max")) for n in names]))
        lines.append(row("r_unc(f̃) > r_in(f): the projection missed g(z + r) (exact: never)",
                         [f"{res[n].above_r_in()} of {res[n].violations()['measured']}" for n in names]))
        lines.append(row("median projection residual ‖g(z*(x)) − x‖ at x = g(z)",
                         [med(res[n].residual_at_x) for n in names]))
        lines.append(row("f̃(x) = f(x)", [f"{100 * float(res[n].label_kept.float().mean()):.0f}%" for n in names]))
        first = next(iter(res.values()))
        attacks = ", ".join(first.by_attack) or "none"
        note = (f"Theorem 2 (projected classifier f̃(x) = f(g(z*)), z* = argmin_z ‖g(z) − x‖₂ by Adam): "
                f"n = {first.n} points x = g(z); r_unc(f̃) = smallest verified label change of f̃ over: "
                f"{attacks} (f̃ is not differentiable: decision-based and BPDA attacks; an upper bound "
                f"on the true r_unc(f̃)). The theorem needs the exact argmin; violations are counted, "
                f"not hidden.\n\n")
        return note + "\n".join(lines) + "\n"

    def _theorem3_markdown(self) -> str:
        etas = self.theorem3_etas()
        pairs = list(self.transfer)
        head = ["| η | " + " | ".join(f"{p}: measured / bound" for p in pairs) + " |",
                "|---:|" + "---:|" * len(pairs)]
        rates = {p: (self.transfer[p].rate(etas), self.transfer[p].bound(etas)) for p in pairs}
        lines = [f"| {_fmt(float(e))} | " + " | ".join(f"{rates[p][0][i]:.2f} / {rates[p][1][i]:.2f}" for p in pairs)
                 + " |" for i, e in enumerate(etas)]
        lines.append("| δ = P(f(g(z)) ≠ h(g(z))) | " + " | ".join(
            f"{self.transfer[p].delta:.3f} ({self.transfer[p].delta_samples} samples)" for p in pairs) + " |")
        lines.append("| f's own minimal r_in perturbation also fools h | " + " | ".join(
            f"{100 * self.transfer[p].f_transfers:.0f}%" for p in pairs) + " |")
        lines.append("| median joint radius (found) | " + " | ".join(
            f"{_fmt(float(np.median(self.transfer[p].joint.double().cpu().numpy())))} "
            f"({int(torch.isfinite(self.transfer[p].joint).sum())}/{self.transfer[p].n})" for p in pairs) + " |")
        first = next(iter(self.transfer.values()))
        note = (f"Theorem 3 (transfer): P(one v, ‖v‖₂ ≤ η, fools both) ≥ 1 − √(π/2)·exp(−(η/L)²/2) − 2δ, "
                f"L = {self.lipschitz:.4g}. Measured: fraction of n = {first.n} points x = g(z) where a "
                f"generated perturbation g(z + r) − g(z) of norm ≤ η changes both labels (a lower estimate "
                f"of the probability).\n\n")
        return note + "\n".join(head + lines) + "\n"


def _cell(s: dict[str, float]) -> str:
    return f"{_fmt(s['median'])} ({_fmt(s['mean'])})"


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:.3g}"


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def bounds_table(classifiers: Mapping[str, nn.Module], g: Generator, *, latent_dim: int, n: int = 200,
                 seed: int = 0, lipschitz: float | LipschitzEstimate | None = None,
                 lipschitz_samples: int = 256, test_data: tuple[Tensor, Tensor] | None = None,
                 input_shape: Sequence[int] | None = None, search: LatentSearch | None = None,
                 attacks: Mapping[str, AttackLike] | None = None, batch_size: int = 256, progress: bool = True,
                 extra_provenance: Mapping[str, Any] | None = None,
                 projected: bool | Sequence[str] = False, projected_n: int | None = None,
                 projection: Mapping[str, Any] | None = None, query_budget: int = 2000,
                 transfer: bool | Sequence[tuple[str, str]] = False,
                 transfer_etas: Sequence[float] | None = None, delta_samples: int = 10_000) -> BoundsTable:
    """Measure the seed's table: for each classifier, latent, in-distribution and unconstrained
    robustness at ``n`` points ``g(z)``, ``z ~ N(0, I)`` (the same ``z`` for every classifier, drawn
    from a generator seeded with ``seed``), next to Theorem 1's upper bounds.

    Args:
        classifiers: name -> model returning logits on ``g``'s outputs (trained on real data).
        g: the generator, ``(B, latent_dim) -> (B, *input_shape)`` in ``[0, 1]``.
        latent_dim: ``d >= 1``.
        lipschitz: ``L`` for the bound; ``None`` estimates it with :func:`lipschitz_estimate`
            (``lipschitz_samples`` samples, seeded with ``seed + 1``).
        test_data: ``(x, y)`` real test data for the error-rate row.
        input_shape: the data shape; default: each classifier's ``in_shape`` when it has one.
        search, attacks: see :func:`measure_robustness`.
        projected: Theorem 2 for these classifiers (``True``: all): :func:`measure_projected` at the
            first ``projected_n`` of the ``n`` points (default all; each query of ``f̃`` runs a
            projection), with ``ProjectedClassifier(f, g, latent_dim, **projection)`` and
            ``query_budget`` HopSkipJump queries per point.
        transfer: Theorem 3 for these pairs of classifier names (``True``: every pair):
            :func:`measure_transfer` at the same points, with the table's ``L``; ``transfer_etas``
            the radii of its rows, ``delta_samples`` codes for the disagreement ``δ``.

    Example:
        >>> table = bounds_table({"cnn": cnn}, vae.decoder, latent_dim=8, n=200)
        >>> print(table.to_markdown()); bound_cdf_figure(table, path="cdf.png")
    """
    latent_dim = check_int("latent_dim", latent_dim)
    check_int("n", n)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not isinstance(classifiers, Mapping) or not classifiers:
        raise ValueError("classifiers must be a non-empty mapping name -> nn.Module")
    device = _generator_device(g)
    sample_shape = _check_generator(g, latent_dim, device)
    if input_shape is not None and tuple(input_shape) != sample_shape:
        raise ValueError(f"the generator makes inputs of shape {sample_shape} but the data have shape "
                         f"{tuple(input_shape)}")
    for name, f in classifiers.items():
        check_model(f)
        _check_shapes(f, sample_shape, input_shape, name)
    _theorem_targets(classifiers, projected, transfer, projected_n)  # fail before measuring anything
    est, L = _lipschitz(lipschitz, g, latent_dim=latent_dim, samples=lipschitz_samples, seed=seed,
                        device=device)
    z = torch.randn(n, latent_dim, generator=torch.Generator(device=device).manual_seed(seed), device=device)
    results: dict[str, GenerativeRobustness] = {}
    errors: dict[str, float] = {}
    bar = tqdm(list(classifiers.items()), desc="bounds", disable=not progress)
    search = search or LatentSearch()
    for name, f in bar:
        bar.set_postfix_str(name)
        results[name] = measure_robustness(f, g, z, name=name, search=search, attacks=attacks,
                                           input_shape=input_shape, batch_size=batch_size)
        if test_data is not None:
            pred = clean_predictions(f, test_data[0])
            errors[name] = float((pred != test_data[1]).float().mean())
        log.info("%s: median latent %.4g, r_in %.4g, r_unc %.4g (%.0fs)", name,
                 results[name].stats("latent")["median"], results[name].stats("r_in")["median"],
                 results[name].stats("r_unc")["median"], results[name].seconds)
    projected_results, transfer_results = _theorems_2_and_3(
        classifiers, g, z, latent_dim=latent_dim, L=L, seed=seed, search=search,
        projected=projected, projected_n=projected_n, projection=projection, query_budget=query_budget,
        transfer=transfer, delta_samples=delta_samples, progress=progress)
    first = next(iter(results.values()))
    extra = dict(extra_provenance or {})
    if projected_results:
        extra["theorem2"] = {"classifiers": list(projected_results), "n": next(iter(projected_results.values())).n,
                             "measurement": next(iter(projected_results.values())).config}
    if transfer_results:
        extra["theorem3"] = {"pairs": [list(t.pair) for t in transfer_results.values()],
                             "delta_samples": delta_samples}
    prov = provenance(seed=seed, n=n, latent_dim=latent_dim, lipschitz=L,
                      lipschitz_settings=est.settings if est is not None else "given",
                      classifiers=list(results), measurement=first.config,
                      **extra)
    for name, res in results.items():
        if max(res.class_probs) > 0.5:
            log.warning("%s predicts one class on %.0f%% of the samples: eq. (6) assumes every class "
                        "has probability <= 1/2; compare with the class-wise bound (eq. 4)",
                        name, 100 * max(res.class_probs))
    return BoundsTable(lipschitz=L, results=results, lipschitz_estimate=est, error_rates=errors,
                       provenance=prov, projected=projected_results, transfer=transfer_results,
                       transfer_etas=[float(e) for e in transfer_etas] if transfer_etas is not None else None)


def _names(option: bool | Sequence[Any], all_names: list[str], what: str) -> list[Any]:
    if option is True:
        return all_names
    if option is False or option is None:
        return []
    if isinstance(option, (str, bytes)):
        raise TypeError(f"{what} must be True, False or a list, got the string {option!r}")
    return list(option)


def _theorems_2_and_3(classifiers: Mapping[str, nn.Module], g: Generator, z: Tensor, *,
                      latent_dim: int, L: float, seed: int,
                      search: LatentSearch, projected: bool | Sequence[str], projected_n: int | None,
                      projection: Mapping[str, Any] | None, query_budget: int,
                      transfer: bool | Sequence[tuple[str, str]], delta_samples: int, progress: bool,
                      ) -> tuple[dict[str, ProjectedRobustness], dict[str, TransferRobustness]]:
    """The optional Theorem 2 and 3 sections of :func:`bounds_table`."""
    proj_names, pairs = _theorem_targets(classifiers, projected, transfer, projected_n)
    zp = z[:projected_n] if projected_n is not None else z
    out2: dict[str, ProjectedRobustness] = {}
    for name in tqdm(proj_names, desc="theorem 2", disable=not progress or not proj_names):
        f = classifiers[name]
        ft = ProjectedClassifier(f, g, latent_dim, **dict(projection or {}))
        out2[name] = measure_projected(f, g, zp, name=name, projected=ft, search=search,
                                       query_budget=query_budget, seed=seed)
        s = out2[name].summary()
        log.info("%s: Theorem 2 holds at %.0f%% of %d points (median r_unc(f̃)/r_in %.3g), %.0fs", name,
                 100 * s["fraction_half"], s["n"], s["ratio"]["median"], out2[name].seconds)
    out3: dict[str, TransferRobustness] = {}
    for a, b in tqdm(pairs, desc="theorem 3", disable=not progress or not pairs):
        res = measure_transfer(classifiers[a], classifiers[b], g, z, lipschitz=L, names=(a, b), search=search,
                               delta_samples=delta_samples, seed=seed + 2)
        out3[res.name] = res
    return out2, out3


def _lipschitz(lipschitz: float | LipschitzEstimate | None, g: Generator, *, latent_dim: int, samples: int,
               seed: int, device: torch.device) -> tuple[LipschitzEstimate | None, float]:
    """The ``L`` of the bounds and its estimate: the one given, or :func:`lipschitz_estimate` with
    ``samples`` samples seeded with ``seed + 1`` (``None`` as the estimate when ``L`` was a number)."""
    if lipschitz is None:
        est = lipschitz_estimate(g, latent_dim=latent_dim, samples=samples,
                                 generator=torch.Generator(device=device).manual_seed(seed + 1))
        log.info("Lipschitz estimate %.4g (pairs %.4g, Jacobian %.4g)", est.value, est.pair_ratio,
                 est.jacobian_norm)
        return est, est.value
    if isinstance(lipschitz, LipschitzEstimate):
        return lipschitz, _check_lipschitz(lipschitz.value)
    return None, _check_lipschitz(lipschitz)


def _theorem_targets(classifiers: Mapping[str, nn.Module], projected: bool | Sequence[str],
                     transfer: bool | Sequence[tuple[str, str]], projected_n: int | None,
                     ) -> tuple[list[str], list[tuple[str, str]]]:
    """The classifiers of Theorem 2 and the pairs of Theorem 3, checked (before anything is measured)."""
    names = list(classifiers)
    proj_names = _names(projected, names, "projected")
    if transfer is True:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        if not pairs:
            raise ValueError("transfer=True needs at least two classifiers")
    else:
        pairs = [tuple(p) for p in _names(transfer, names, "transfer")]
    for name in proj_names:
        if name not in classifiers:
            raise ValueError(f"projected names {name!r}, which is not one of the classifiers {names}")
    for pair in pairs:
        if len(pair) != 2 or any(p not in classifiers for p in pair) or pair[0] == pair[1]:
            raise ValueError(f"transfer pairs must be two different classifier names out of {names}, got {pair!r}")
    if projected_n is not None:
        check_int("projected_n", projected_n)
    return proj_names, pairs
