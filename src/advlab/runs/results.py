"""Asking the store: robust accuracy per attack, the worst case per point over every attack ever
stored for a model and threat, and a RobustBench-style leaderboard. Every number is read from
stored rows; nothing is recomputed from a model.

The worst case at ε counts a point as broken when any stored outcome for that model, dataset and
norm broke it at ε: an ε-bounded attack's success at that ε, or a minimal-perturbation attack's
distance ≤ ε. Its denominators are stated: ``n`` distinct points that any cell evaluated, of which
``n_correct`` the model classifies correctly; each point counts the attacks that ran on it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

from advlab.runs.cells import MINIMAL_EPS
from advlab.runs.store import Store

FORMATS = ("md", "csv", "json")


#: a cell's threat: what the attacker may use (a robust cell says; strong and minimal cells are
#: white-box; a transfer cell's attacker shows the target only crafted inputs)
THREATS = ("white-box", "black-box", "transfer")
_THREAT = ("(CASE c.kind WHEN 'transfer' THEN 'transfer' WHEN 'robust' THEN "
           "coalesce(json_extract(c.config, '$.threat'), 'white-box') ELSE 'white-box' END)")


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    clauses, params = ["c.status = 'done'"], []
    if filters.get("threat") is not None and filters["threat"] not in THREATS:
        raise ValueError(f"unknown threat {filters['threat']!r}: use {', '.join(THREATS)}")
    for column, value in (("c.model_name", filters.get("model")), ("c.dataset", filters.get("dataset")),
                          ("c.norm", filters.get("norm")), ("c.run_id", filters.get("run")),
                          (_THREAT, filters.get("threat"))):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def robust_rows(store: Store, **filters: Any) -> list[dict[str, Any]]:
    """One row per stored (cell, attack, ε) of the ε-bounded kinds, with its denominators."""
    where, params = _where(filters)
    if filters.get("attack") is not None:
        where += " AND lower(m.attack) = lower(?)"
        params.append(filters["attack"])
    rows = store.query(
        "SELECT c.hash, c.kind, c.model_name, c.model, c.dataset, c.norm, c.run_id, m.attack, m.eps, m.name, m.value "
        "FROM metrics m JOIN cells c ON c.hash = m.cell "
        f"WHERE {where} AND c.kind IN ('robust', 'strong', 'transfer') AND m.eps IS NOT NULL "
        "ORDER BY c.model_name, c.dataset, c.norm, m.attack, m.eps", params)
    table: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["hash"], r["attack"], r["eps"])
        entry = table.setdefault(key, {"model": r["model_name"], "dataset": r["dataset"], "norm": r["norm"],
                                       "attack": r["attack"], "eps": r["eps"], "kind": r["kind"],
                                       "cell": r["hash"], "run": r["run_id"]})
        entry[r["name"]] = r["value"]
    return list(table.values())


def worst_case(store: Store, **filters: Any) -> list[dict[str, Any]]:
    """Per (model, dataset, norm, ε): the worst case per point over every stored attack."""
    where, params = _where(filters)
    cells = store.query(f"SELECT c.hash, c.model, c.model_name, c.dataset, c.norm FROM cells c WHERE {where} "
                        "AND c.kind IN ('robust', 'strong', 'transfer', 'minimal')", params)
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    names: dict[str, set[str]] = defaultdict(set)
    for c in cells:
        groups[(c["model"], c["dataset"], c["norm"])].append(c["hash"])
        names[c["model"]].add(c["model_name"])
    out = []
    for (model, dataset, norm), hashes in sorted(groups.items(), key=lambda kv: (sorted(names[kv[0][0]]), kv[0][1:])):
        marks = ",".join("?" * len(hashes))
        rows = store.query(f"SELECT attack, eps, point, clean_correct, success, norm FROM outcomes "
                           f"WHERE cell IN ({marks})", hashes)
        eps_list = sorted({r["eps"] for r in rows if r["eps"] != MINIMAL_EPS})
        if not eps_list:
            continue
        clean: dict[int, int] = {}
        for r in rows:
            clean[r["point"]] = min(clean.get(r["point"], 1), r["clean_correct"])  # disagreement: not correct
        minimal = [(r["point"], r["norm"]) for r in rows if r["eps"] == MINIMAL_EPS and r["success"]]
        for e in eps_list:
            broken = {r["point"] for r in rows if r["eps"] == e and r["success"]}
            broken |= {p for p, d in minimal if d is not None and d <= e + 1e-12}
            attacks = sorted({r["attack"] for r in rows if r["eps"] == e}
                             | ({f"{r['attack']} (minimal, ‖δ‖ ≤ ε)" for r in rows if r["eps"] == MINIMAL_EPS}))
            n, n_correct = len(clean), sum(clean.values())
            n_broken = len(broken & {p for p, ok in clean.items() if ok})
            out.append({"model": ", ".join(sorted(names[model])), "model_key": model, "dataset": dataset,
                        "norm": norm, "eps": e, "n": n, "n_correct": n_correct, "n_robust": n_correct - n_broken,
                        "clean_accuracy": n_correct / n if n else math.nan,
                        "robust_accuracy": (n_correct - n_broken) / n if n else math.nan,
                        "attacks": attacks, "cells": len(hashes)})
    return out


AUDIT_COLUMNS = ("model", "dataset", "norm", "eps", "verdict", "failed_checks", "n", "cell")


def audits(store: Store, **filters: Any) -> list[dict[str, Any]]:
    """One row per stored audit cell and ε: the verdict (``passed`` / ``MASKED?``) and the checks
    that failed, read from the cell's metrics."""
    where, params = _where(filters)
    rows = store.query("SELECT c.hash, c.model_name, c.dataset, c.norm, m.eps, m.name, m.value FROM metrics m "
                       f"JOIN cells c ON c.hash = m.cell WHERE {where} AND c.kind = 'audit' "
                       "ORDER BY c.model_name, c.dataset, c.norm, m.eps, m.name", params)
    table: dict[tuple[str, float], dict[str, Any]] = {}
    for r in rows:
        e = table.setdefault((r["hash"], r["eps"]), {"model": r["model_name"], "dataset": r["dataset"],
                                                    "norm": r["norm"], "eps": r["eps"], "cell": r["hash"],
                                                    "failed_checks": []})
        if r["name"] == "passed":
            e["verdict"] = "passed" if r["value"] == 1.0 else "MASKED?"
        elif r["name"] == "n":
            e["n"] = int(r["value"])
        elif r["name"].startswith("check:") and r["value"] == 0.0:
            e["failed_checks"].append(r["name"][len("check:"):])
    return list(table.values())


def leaderboard(store: Store, **filters: Any) -> list[dict[str, Any]]:
    """Models ranked per dataset and threat (norm, ε) by robust accuracy under the worst case of
    every stored attack (the strongest evaluation stored), RobustBench style."""
    rows = worst_case(store, **filters)
    ranked = sorted(rows, key=lambda r: (r["dataset"], r["norm"], r["eps"], -r["robust_accuracy"],
                                         -r["clean_accuracy"], r["model"]))
    rank, last = 0, None
    for r in ranked:
        group = (r["dataset"], r["norm"], r["eps"])
        rank = 1 if group != last else rank + 1
        last = group
        r["rank"] = rank
    return ranked


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, *, title: str = "",
           note: str = "") -> str:
    """Rows as a markdown table, CSV or JSON."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps([{c: _json_value(r.get(c)) for c in columns} for r in rows], indent=2, default=str,
                          allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
        return buf.getvalue()
    lines = ([f"## {title}", ""] if title else []) + ([note, ""] if note else [])
    if not rows:
        return "\n".join(lines + ["(nothing stored matches)"]) + "\n"
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---:" if isinstance(rows[0].get(c), (int, float)) else "---" for c in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


ROBUST_COLUMNS = ("model", "dataset", "norm", "attack", "eps", "n", "n_correct", "n_robust", "robust_accuracy",
                  "run", "cell")
WORST_COLUMNS = ("model", "dataset", "norm", "eps", "n", "n_correct", "n_robust", "clean_accuracy",
                 "robust_accuracy", "attacks")
BOARD_COLUMNS = ("rank", "model", "dataset", "norm", "eps", "clean_accuracy", "robust_accuracy", "n",
                 "attacks")


def results_text(store: Store, *, fmt: str = "md", **filters: Any) -> str:
    """``advlab results``: per-attack rows, then the worst case per point over every stored attack."""
    per_attack = robust_rows(store, **filters)
    rest = {k: v for k, v in filters.items() if k != "attack"}
    worst = worst_case(store, **rest)
    audit_rows = audits(store, **rest)
    if fmt == "json":
        return json.dumps({"rows": json.loads(render(per_attack, ROBUST_COLUMNS, "json")),
                           "worst_case": json.loads(render(worst, WORST_COLUMNS, "json")),
                           "audits": json.loads(render(audit_rows, AUDIT_COLUMNS, "json"))}, indent=2)
    if fmt == "csv":
        return (render(per_attack, ROBUST_COLUMNS, "csv") + "\n" + render(worst, WORST_COLUMNS, "csv")
                + ("\n" + render(audit_rows, AUDIT_COLUMNS, "csv") if audit_rows else ""))
    note = ("Robust accuracy over n points (attacks run on the n_correct correctly classified ones). The worst "
            "case counts a point as broken when any stored attack broke it at ε (a minimal attack: its "
            "distance ≤ ε), over every run in the store.")
    return (render(per_attack, ROBUST_COLUMNS, "md", title="Robust accuracy per attack", note=note)
            + "\n" + render(worst, WORST_COLUMNS, "md", title="Worst case per point over every stored attack")
            + ("\n" + render(audit_rows, AUDIT_COLUMNS, "md", title="Gradient-masking audits",
                              note="MASKED? means a check failed: the attacks' numbers may overstate robustness "
                                   "(see `advlab audit` for the advice per check).") if audit_rows else ""))
