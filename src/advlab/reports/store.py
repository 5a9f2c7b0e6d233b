"""``advlab report --store runs.db --out DIR``: one static HTML page from the results store.

Every number on the page is a stored row (nothing is recomputed from a model): the leaderboard
and worst case per point (:mod:`advlab.runs.results`), robust accuracy per model and attack with
its accuracy-vs-ε curve per dataset and norm, minimal-perturbation distributions, transfer
heatmaps, failed cells with their errors, and the provenance of every run. The page needs no
server and no network: the figures are PNG files beside it. Table cells carry the stored value in
a ``data-value`` attribute, so a test can compare the page with the store exactly.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from advlab._io import atomic_write_text
from advlab.evaluation.techniques import LEARNERS
from advlab.reports.transfer import heatmap_figure
from advlab.reports._figure import save_png
from advlab.reports.page import CSS

PathLike = str | os.PathLike[str]


def _num(v: Any, fmt: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, fmt) if isinstance(v, float) else str(v)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, table_id: str,
           pct: Sequence[str] = ()) -> list[str]:
    """An HTML table; numbers right-aligned, each cell's stored value in ``data-value``."""
    esc = html.escape
    if not rows:
        return ["<p>(nothing stored)</p>"]
    out = [f'<div class="wide"><table id="{esc(table_id)}">', "<thead><tr>"
           + "".join(f"<th>{esc(label)}</th>" for _, label in columns) + "</tr></thead>", "<tbody>"]
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                shown = _num(100 * v, ".1f") if key in pct and v is not None else _num(v)
                cells.append(f'<td class="num" data-key="{esc(key)}" data-value="{esc(repr(v))}">{esc(shown)}</td>')
            else:
                text = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else ("–" if v is None else str(v))
                cells.append(f'<td data-key="{esc(key)}">{esc(text)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table></div>"]
    return out


def _evaluation(per_attack: list[dict[str, Any]], worst: list[dict[str, Any]]) -> Any:
    """The stored rows of one (dataset, norm) as an Evaluation whose attacks read
    ``"<model> · <attack>"``, for the accuracy-vs-ε curve."""
    from advlab.evaluation import EvalRow, Evaluation

    rows = []
    nan = float("nan")
    for r in per_attack:
        if r["attack"] == "worst-case":
            continue
        rows.append(EvalRow(attack=f"{r['model']} · {r['attack']}", eps=r["eps"], norm=r["norm"], n=int(r["n"]),
                            n_correct=int(r["n_correct"]), n_robust=int(r["n_robust"]),
                            clean_accuracy=r["clean_accuracy"], robust_accuracy=r["robust_accuracy"],
                            success_rate=r.get("success_rate") if r.get("success_rate") is not None else nan,
                            median_norm=r.get("median_norm") if r.get("median_norm") is not None else nan,
                            mean_norm=nan, grads=int(r.get("grads") or 0), seconds=float(r.get("seconds") or 0.0),
                            config=f"cell {r['cell']}"))
    for w in worst:
        rows.append(EvalRow(attack=f"{w['model']} · worst-case", eps=w["eps"], norm=w["norm"], n=w["n"],
                            n_correct=w["n_correct"], n_robust=w["n_robust"], clean_accuracy=w["clean_accuracy"],
                            robust_accuracy=w["robust_accuracy"],
                            success_rate=(w["n_correct"] - w["n_robust"]) / w["n_correct"] if w["n_correct"] else nan,
                            median_norm=nan, mean_norm=nan, grads=0, seconds=0.0,
                            config="any of: " + ", ".join(w["attacks"])))
    return Evaluation(rows=rows)


def _minimal_figures(store: Any, out: Path) -> list[tuple[str, Path]]:
    """One minimal-norm figure per (model, dataset, norm) with minimal cells stored."""
    from advlab.evaluation import MinimalNorms
    from advlab.reports.minimal import minimal_norms_figure

    cells = store.query("SELECT hash, model_name, model, dataset, norm FROM cells WHERE status = 'done' "
                        "AND kind = 'minimal' ORDER BY model_name, dataset, norm")
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for c in cells:
        groups[(c["model_name"], c["dataset"], c["norm"])].append(c["hash"])
    figures = []
    for (model, dataset, norm), hashes in groups.items():
        marks = ",".join("?" * len(hashes))
        rows = store.query(f"SELECT attack, point, clean_correct, success, norm FROM outcomes WHERE cell IN ({marks}) "
                           "ORDER BY attack, point", hashes)
        points = sorted({r["point"] for r in rows})
        index = {p: i for i, p in enumerate(points)}
        correct = np.zeros(len(points), dtype=bool)
        by_attack: dict[str, np.ndarray] = {}
        for r in rows:
            d = by_attack.setdefault(r["attack"], np.full(len(points), np.inf))
            i = index[r["point"]]
            correct[i] = bool(r["clean_correct"])
            d[i] = 0.0 if not r["clean_correct"] else (r["norm"] if r["success"] and r["norm"] is not None else np.inf)
        best = np.min(np.stack(list(by_attack.values())), axis=0)
        import torch

        mn = MinimalNorms(distances=torch.as_tensor(best), norm=norm, correct=torch.as_tensor(correct),
                          by_attack={k: torch.as_tensor(v) for k, v in by_attack.items()})
        path = out / f"minimal_{_slug(model)}_{_slug(dataset)}_{norm}.png"
        minimal_norms_figure(mn, path=path, title=f"Minimal {norm} perturbations: {model} on {dataset}")
        figures.append((f"Smallest perturbation found per point for {model} on {dataset} ({norm}), and the "
                        "robust accuracy it implies at every ε (stored distances).", path))
    return figures


def _transfer_figures(store: Any, out: Path) -> list[tuple[str, Path]]:
    """A source × target heatmap of stored transfer success rates per (dataset, attack, ε)."""
    rows = store.query(
        "SELECT c.config, c.dataset, m.attack, m.eps, m.value FROM metrics m JOIN cells c ON c.hash = m.cell "
        "WHERE c.status = 'done' AND c.kind = 'transfer' AND m.name = 'success_rate'")
    grids: dict[tuple[str, str, float], dict[tuple[str, str], float]] = defaultdict(dict)
    for r in rows:
        cfg = json.loads(r["config"])
        attack = r["attack"].split(" from ")[0]
        grids[(r["dataset"], attack, r["eps"])][(cfg["source"]["name"], cfg["model"]["name"])] = r["value"]
    # Papernot et al.'s cross-technique matrices: one cell holds every (source, target)
    techniques = store.query(
        "SELECT c.config, m.attack, m.eps, m.value FROM metrics m JOIN cells c ON c.hash = m.cell "
        "WHERE c.status = 'done' AND c.kind = 'techniques' AND m.name = 'success_rate'")
    for r in techniques:
        cfg = json.loads(r["config"])
        pair = r["attack"].removeprefix("techniques ").split(" → ")
        key = (cfg["data"]["name"], f"each technique's own attack ({cfg['norm']}, seed {cfg['seed']})", r["eps"])
        grids[key][(pair[0], pair[1])] = r["value"]
    figures = []
    for (dataset, attack, eps), cells in sorted(grids.items()):
        order = {k: i for i, k in enumerate(LEARNERS)}  # techniques in the paper's order, others by name
        sources = sorted({s for s, _ in cells}, key=lambda k: (order.get(k, len(order)), k))
        targets = sorted({t for _, t in cells}, key=lambda k: (order.get(k, len(order)), k))
        grid = np.full((len(sources), len(targets)), np.nan)
        for (s, t), v in cells.items():
            grid[sources.index(s), targets.index(t)] = np.nan if v is None else 100 * v
        fig = heatmap_figure(grid, sources, targets, title=f"{attack}, ε = {eps:g}, {dataset}")
        path = out / f"transfer_{_slug(dataset)}_{_slug(attack)}_{eps:g}.png"
        save_png(fig, path)
        figures.append((f"Transfer success of {attack} at ε = {eps:g} on {dataset}: crafted on each source, "
                        "counted on the points each target classifies correctly.", path))
    return figures


def _galleries(store: Any, out: Path) -> tuple[list[tuple[str, Path]], list[str], list[tuple[str, str]]]:
    """One gallery per (model, dataset, norm, attack) from its first robust cell's stored
    examples (``<store>.files/<hash>/examples.safetensors``) at the median stored ε; the inputs,
    classes and confidences are the file's, no model runs. Images are drawn as a gallery, signals
    as per-channel curves (:func:`~advlab.reports.signal_gallery`), table rows as their changed
    features (:func:`~advlab.reports.changed_features_table`, a Markdown section). Returns the
    figures, a note per unreadable file and the (heading, Markdown) sections."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from advlab.data.dataset import FeatureScaling
    from advlab.reports.gallery import gallery
    from advlab.reports.signals import signal_gallery
    from advlab.reports.tabular import changed_features_table
    from advlab.runs.cells import ref_bounds

    cells = store.query("SELECT hash, model_name, dataset, norm, config FROM cells WHERE status = 'done' "
                        "AND kind = 'robust' ORDER BY model_name, dataset, norm, updated")
    seen: set[tuple[str, str, str, str]] = set()
    figures, notes, sections = [], [], []
    for c in cells:
        cfg = json.loads(c["config"])
        path = store.files / c["hash"] / "examples.safetensors"
        key = (c["model_name"], c["dataset"], c["norm"], cfg["attack"]["name"])
        if key in seen or not path.is_file():
            continue
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
            eps_list = json.loads(meta["eps"])
            e = eps_list[len(eps_list) // 2]
            t = {name: tensors[f"{name}@{e}"] for name in ("x", "x_adv", "y", "clean_pred", "clean_conf",
                                                            "adv_pred", "adv_conf")}
            class_names = json.loads(meta.get("class_names", "null"))
            attack = meta.get("attack", cfg["attack"]["name"])
            # (files written before the kind was stored: a table is 2-D, anything else an image)
            kind = meta.get("kind", "table" if t["x"].ndim == 2 else "image")
            feature_names = json.loads(meta.get("feature_names", "null"))
            sc = json.loads(meta.get("scaling", "null"))
            scaling = None if sc is None else FeatureScaling(low=sc["low"], high=sc["high"],
                                                             fitted_on=sc.get("fitted_on", ""))
        except (OSError, KeyError, ValueError, TypeError, IndexError, SafetensorError) as err:
            notes.append(f"cell {c['hash']}: its examples file could not be read ({type(err).__name__}: {err}); "
                         "no gallery for it")
            continue
        seen.add(key)
        n = min({"image": 6, "signal": 4}.get(kind, 2), int(t["x"].shape[0]))
        fooled = int((t["adv_pred"][:n] != t["y"][:n]).sum())
        what = {"table": "rows", "signal": "signals"}.get(kind, "test points")
        about = (f"{attack} on {c['model_name']} ({c['dataset']}, {c['norm']}) at ε = {e}: the first {n} "
                 f"attacked {what} (each classified correctly clean); {fooled} of {n} fooled. "
                 f"Classes and confidences as stored by cell {c['hash']}.")
        common = dict(class_names=class_names, clean_pred=t["clean_pred"], clean_conf=t["clean_conf"],
                      adv_pred=t["adv_pred"], adv_conf=t["adv_conf"])
        stem = f"{_slug(c['model_name'])}_{_slug(c['dataset'])}_{_slug(attack)}_{c['norm']}"
        try:
            if kind == "table":
                text = changed_features_table(t["x"], t["x_adv"], feature_names=feature_names, scaling=scaling,
                                              n=n, **common)
                sections.append((f"Changed features: {attack} on {c['model_name']} ({c['dataset']}, "
                                 f"{c['norm']}, ε = {e})", about + "\n\n" + text))
                continue
            fig_path = out / (f"signal_gallery_{stem}.png" if kind == "signal" else f"gallery_{stem}.png")
            if kind == "signal":
                signal_gallery(t["x"], t["x_adv"], true_labels=t["y"], norm=c["norm"], channel_names=feature_names,
                               scaling=scaling, n=n, title=f"{c['model_name']}: {attack}, ε = {e}", path=fig_path,
                               **common)
            else:
                gallery(t["x"], t["x_adv"], true_labels=t["y"], norm=c["norm"], bounds=ref_bounds(cfg["model"]),
                        n=n, title=f"{c['model_name']}: {attack}, ε = {e}", path=fig_path, **common)
        except (ValueError, TypeError) as err:  # stored inputs of a shape no drawing takes
            notes.append(f"cell {c['hash']}: its examples ({kind}, shape {tuple(t['x'].shape)}) could not be "
                         f"drawn ({err})")
            continue
        figures.append((about, fig_path))
    return figures, notes, sections


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(text)).strip("-") or "x"


def store_report(store: Any, out: PathLike, *, title: str | None = None) -> Path:
    """Write ``out/index.html`` (and its figures) from ``store``; return the page's path."""
    from advlab.reports.curve import accuracy_curve
    from advlab.runs.results import audits, leaderboard, robust_rows, worst_case

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    title = title or f"advlab results: {store.path.name}"
    board = leaderboard(store)
    per_attack = robust_rows(store)
    worst = worst_case(store)
    cells = store.query("SELECT kind, status, count(*) AS n FROM cells GROUP BY kind, status ORDER BY kind, status")
    failed = [dict(r) for r in store.query("SELECT hash, kind, label, error, run_id FROM cells WHERE status = 'failed' "
                                           "ORDER BY updated")]
    runs = [dict(r) for r in store.query("SELECT id, spec_name, executor, code_revision, machine, versions, started, "
                                         "finished, status FROM runs ORDER BY id")]
    for r in runs:
        for k in ("started", "finished"):
            r[k] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r[k])) + " UTC" if r[k] else "–"
        r["versions"] = ", ".join(f"{k} {v}" for k, v in json.loads(r["versions"] or "{}").items())

    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{esc(title)}</h1>", "<h2>Notes</h2>", '<div class="notes">',
             "<p>" + esc("Stored cells: " + ", ".join(f"{r['n']} {r['kind']} {r['status']}" for r in cells)
                         + f"; {len(runs)} run(s).") + "</p>",
             "<p>" + esc("Every number here is read from the store. Robust accuracy is over n points; the "
                         "attacks ran on the n_correct points the model classifies correctly. The worst case "
                         "counts a point as broken when any stored attack broke it at ε (a minimal attack: "
                         "its distance ≤ ε), over every run.") + "</p>", "</div>"]
    parts += ["<h2>Leaderboard</h2>",
              "<p>Models ranked per dataset and threat by robust accuracy under the worst case of every stored "
              "attack (the strongest evaluation stored).</p>",
              *_table(board, [("rank", "rank"), ("model", "model"), ("dataset", "dataset"), ("norm", "norm"),
                              ("eps", "ε"), ("clean_accuracy", "clean (%)"), ("robust_accuracy", "robust (%)"),
                              ("n", "n"), ("n_correct", "n correct"), ("n_robust", "n robust"),
                              ("attacks", "attacks that count")],
                      table_id="leaderboard", pct=("clean_accuracy", "robust_accuracy"))]
    figures: list[tuple[str, Path]] = []
    groups: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    for r in per_attack:
        groups[(r["dataset"], r["norm"])][0].append(r)
    for w in worst:
        groups[(w["dataset"], w["norm"])][1].append(w)
    for (dataset, norm), (rows, wrows) in sorted(groups.items()):
        if wrows:   # the models side by side: each one's worst case (few lines, readable)
            ev = _evaluation([], wrows)
            path = out / f"worst_case_{_slug(dataset)}_{norm}.png"
            accuracy_curve(ev, path=path, title=f"{dataset}, {norm}: worst case per model (stored)")
            figures.append((f"Worst-case robust accuracy against ε on {dataset} ({norm}): one line per model "
                            "(every stored attack counts), each model's clean accuracy dotted.", path))
        for model in sorted({r["model"] for r in rows}):   # then each model with its attacks
            ev = _evaluation([r for r in rows if r["model"] == model], [w for w in wrows if w["model"] == model])
            path = out / f"accuracy_vs_eps_{_slug(model)}_{_slug(dataset)}_{norm}.png"
            accuracy_curve(ev, path=path, title=f"{model} on {dataset}, {norm}: robust accuracy (stored)")
            figures.append((f"Robust accuracy of {model} against ε on {dataset} ({norm}): one line per stored "
                            "attack, the worst case per point, clean accuracy dotted.", path))
    parts += ["<h2>Robust accuracy per model and attack</h2>",
              *_table(per_attack, [("model", "model"), ("dataset", "dataset"), ("norm", "norm"), ("attack", "attack"),
                                   ("eps", "ε"), ("n", "n"), ("n_correct", "n correct"), ("n_robust", "n robust"),
                                   ("robust_accuracy", "robust (%)"), ("median_norm", "median ‖δ‖"),
                                   ("run", "run"), ("cell", "cell")],
                      table_id="robust", pct=("robust_accuracy",)),
              "<h2>Worst case per point</h2>",
              *_table(worst, [("model", "model"), ("dataset", "dataset"), ("norm", "norm"), ("eps", "ε"), ("n", "n"),
                              ("n_correct", "n correct"), ("n_robust", "n robust"), ("robust_accuracy", "robust (%)"),
                              ("attacks", "attacks"), ("cells", "cells")],
                      table_id="worst", pct=("robust_accuracy",))]
    audit_rows = audits(store)
    if audit_rows:
        parts += ["<h2>Gradient-masking audits</h2>",
                  "<p>Per model and ε, whether every check of the audit passed (Athalye et al. 2018's warning "
                  "signs: single-step beating iterative, black-box beating white-box, unbounded attacks not "
                  "reaching 100%, zero gradients). MASKED? means the robust accuracy above may overstate "
                  "robustness.</p>",
                  *_table(audit_rows, [("model", "model"), ("dataset", "dataset"), ("norm", "norm"), ("eps", "ε"),
                                       ("verdict", "verdict"), ("failed_checks", "failed checks"), ("n", "n"),
                                       ("cell", "cell")], table_id="audits")]
    galleries, gallery_notes, example_tables = _galleries(store, out)
    figures += galleries + _minimal_figures(store, out) + _transfer_figures(store, out)
    for note in gallery_notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    if example_tables:
        from advlab.reports.page import markdown_html

        for heading, text in example_tables:
            parts += [f"<h2>{esc(heading)}</h2>", *markdown_html(text)]
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, path in figures:
            parts.append(f'<figure><img src="{esc(path.name)}" alt="{esc(caption)}">'
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts += ["<h2>Failed cells</h2>",
              *(_table(failed, [("hash", "cell"), ("kind", "kind"), ("label", "what"), ("error", "error"),
                                ("run_id", "run")], table_id="failed") if failed
                else ["<p>None: every stored cell finished.</p>"]),
              "<h2>Provenance</h2>",
              *_table(runs, [("id", "run"), ("spec_name", "spec"), ("executor", "executor"), ("status", "status"),
                             ("started", "started"), ("finished", "finished"), ("code_revision", "code revision"),
                             ("versions", "versions"), ("machine", "machine")], table_id="runs"),
              "</main>", "</body>", "</html>", ""]
    index = out / "index.html"
    atomic_write_text(index, "\n".join(parts))
    return index
