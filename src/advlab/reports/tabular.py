"""The "changed features" table for tabular attacks ``(B, D)``: what an adversarial row altered.

In place of an image gallery: per point, a heading with the clean and adversarial classes, then
one line per changed feature (largest change first): its name, the original value and the
adversarial value in the data's original units (through :class:`~advlab.data.FeatureScaling`),
the change, and the change as a share of the feature's training range (the ``[0, 1]`` units the
attack's ε is measured in). Markdown for a report, CSV for a spreadsheet. Nothing is recomputed:
classes and confidences are passed in.

>>> text = changed_features_from_result(x, result, feature_names=ds.feature_names, scaling=ds.scaling,
...                                     class_names=ds.class_names, clean_pred=p, clean_conf=c,
...                                     path_md="changed.md", path_csv="changed.csv")
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from advlab._io import atomic_write, atomic_write_text
from advlab.reports._figure import to_numpy
from advlab.reports.gallery import _name, _percent, showcase_order
from advlab.reports.signals import _per_point, _to_original

CSV_FIELDS = ("point", "feature", "original", "adversarial", "change", "change_of_range", "clean_class",
              "adversarial_class")


def changed_features_table(x: Any, x_adv: Any, *, feature_names: Sequence[str] | None = None,
                           scaling: Any | None = None, class_names: Sequence[str] | None = None,
                           clean_pred: Any | None = None, clean_conf: Any | None = None,
                           adv_pred: Any | None = None, adv_conf: Any | None = None,
                           points: Sequence[int] | None = None, n: int = 5, top: int | None = 10,
                           atol: float = 1e-6, path_md: str | os.PathLike[str] | None = None,
                           path_csv: str | os.PathLike[str] | None = None) -> str:
    """The changed features of the first ``n`` rows, as Markdown (returned, and written to ``path_md``).

    Args:
        x, x_adv: ``(B, D)`` clean and adversarial rows (in ``[0, 1]`` when ``scaling`` is given).
        feature_names: a name per feature (``Dataset.feature_names``); ``feature k`` otherwise.
        scaling: a :class:`~advlab.data.FeatureScaling` (``Dataset.scaling``) to show original
            units; without it, the values as given.
        class_names: a name per class index.
        clean_pred, clean_conf, adv_pred, adv_conf: ``(B,)``, optional: the heading of each point.
        points: the labels printed for the rows (their indices in the data set); ``0..B-1`` by default.
        n: how many rows.
        top: at most this many features per row (the largest changes), ``None`` for all of them.
        atol: a feature counts as changed when ``|x_adv - x| > atol`` (in the units of ``x``).
        path_md: write the Markdown there.
        path_csv: write every changed feature of the ``n`` rows there (``CSV_FIELDS``; floats with
            ``repr``, so they read back exactly).

    Returns:
        The Markdown text.
    """
    xs, xa = _rows(to_numpy(x, name="x"), "x"), _rows(to_numpy(x_adv, name="x_adv"), "x_adv")
    if xs.shape != xa.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {xs.shape} and {xa.shape}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive integer or None, got {top!r}")
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol!r}")
    d = xs.shape[1]
    names = [str(f) for f in feature_names] if feature_names is not None else [f"feature {k}" for k in range(d)]
    if len(names) != d:
        raise ValueError(f"feature_names has {len(names)} names for {d} features")
    rows = min(n, xs.shape[0])
    labels = list(points) if points is not None else list(range(xs.shape[0]))
    if len(labels) < rows:
        raise ValueError(f"points has {len(labels)} labels, need at least {rows}")
    vals = _per_point(rows, clean_pred=clean_pred, clean_conf=clean_conf, adv_pred=adv_pred, adv_conf=adv_conf)
    unit_change = xa[:rows] - xs[:rows]  # in the units of x: [0, 1] is the training range
    orig, adv = (_to_original(xs[:rows], scaling), _to_original(xa[:rows], scaling)) if scaling is not None else (
        xs[:rows], xa[:rows])

    lines: list[str] = []
    records: list[tuple[Any, ...]] = []
    for i in range(rows):
        changed = np.flatnonzero(np.abs(unit_change[i]) > atol)
        changed = changed[np.argsort(-np.abs(unit_change[i, changed]), kind="stable")]
        clean_cls = _name(class_names, int(vals["clean_pred"][i])) if "clean_pred" in vals else ""
        adv_cls = _name(class_names, int(vals["adv_pred"][i])) if "adv_pred" in vals else ""
        lines.append(f"### Point {labels[i]}{_heading(vals, i, clean_cls, adv_cls)}: "
                     f"{changed.size} of {d} features changed")
        lines.append("")
        if changed.size:
            lines += [f"| feature | original | adversarial | change | change (% of range) |",
                      "|---|---:|---:|---:|---:|"]
            shown = changed if top is None else changed[:top]
            for k in shown:
                lines.append(f"| {_md(names[k])} | {orig[i, k]:.4g} | {adv[i, k]:.4g} | "
                             f"{adv[i, k] - orig[i, k]:+.4g} | {100 * unit_change[i, k]:+.1f}% |")
            if shown.size < changed.size:
                lines.append(f"| … {changed.size - shown.size} more | | | | |")
            lines.append("")
        for k in changed:
            records.append((labels[i], names[k], float(orig[i, k]), float(adv[i, k]),
                            float(adv[i, k] - orig[i, k]), float(unit_change[i, k]), clean_cls, adv_cls))
    if scaling is None:
        lines.append("Values as given (no scaling to original units); the change of range is in those units.")
    else:
        lines.append(f"Original units; the share of range is of each feature's range on the {scaling.fitted_on}."
                     if getattr(scaling, "fitted_on", "") else "Original units.")
    text = "\n".join(lines).rstrip() + "\n"
    if path_md is not None:
        md = Path(path_md)
        md.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(md, text)
    if path_csv is not None:
        out = Path(path_csv)
        out.parent.mkdir(parents=True, exist_ok=True)

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_FIELDS)
                for record in records:
                    writer.writerow([repr(v) if isinstance(v, float) else v for v in record])

        atomic_write(out, write_csv)
    return text


def changed_features_from_result(x: Any, result: Any, *, feature_names: Sequence[str] | None = None,
                                 scaling: Any | None = None, class_names: Sequence[str] | None = None,
                                 clean_pred: Any, clean_conf: Any | None = None, y: Any | None = None,
                                 n: int = 5, top: int | None = 10, atol: float = 1e-6,
                                 path_md: str | os.PathLike[str] | None = None,
                                 path_csv: str | os.PathLike[str] | None = None) -> str:
    """:func:`changed_features_table` for an :class:`~advlab.attacks.AttackResult`: the attack's
    real successes first (the order of :func:`~advlab.reports.gallery_from_result`), each row
    labelled with its index in ``x``."""
    order = showcase_order(result, clean_pred, y, n)

    def pick(v: Any, name: str) -> np.ndarray | None:
        return None if v is None else to_numpy(v, name=name)[order]

    return changed_features_table(pick(x, "x"), pick(result.x_adv, "result.x_adv"), feature_names=feature_names,
                                  scaling=scaling, class_names=class_names, clean_pred=pick(clean_pred, "clean_pred"),
                                  clean_conf=pick(clean_conf, "clean_conf"), adv_pred=pick(result.pred, "result.pred"),
                                  adv_conf=pick(result.confidence, "result.confidence"),
                                  points=[int(i) for i in order], n=n, top=top, atol=atol, path_md=path_md,
                                  path_csv=path_csv)


def _heading(vals: dict[str, np.ndarray], i: int, clean_cls: str, adv_cls: str) -> str:
    if "clean_pred" not in vals or "adv_pred" not in vals:
        return ""
    conf = (lambda key: f" ({_percent(vals[key][i])})" if key in vals else "")
    verdict = "class changed" if int(vals["clean_pred"][i]) != int(vals["adv_pred"][i]) else "class kept"
    return f", clean {clean_cls}{conf('clean_conf')} → adversarial {adv_cls}{conf('adv_conf')} ({verdict})"


def _rows(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 2:
        raise ValueError(f"{name} must be table rows (B, D), got shape {a.shape}; "
                         "for signals use signal_gallery, for images gallery")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return a.astype(np.float64)


def _md(text: str) -> str:
    """A cell's text with Markdown's table delimiter escaped."""
    return text.replace("|", "\\|")
