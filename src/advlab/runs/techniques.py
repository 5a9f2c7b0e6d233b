"""``advlab transfer-matrix``: Papernot et al.'s (2016) cross-technique transferability matrix."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from advlab._io import atomic_write_text
from advlab.runs._common import load_data, say

__all__ = ["transfer_matrix_job"]


def transfer_matrix_job(*, data: str, out: str | Path, learners: Sequence[str] | None = None,
                        eps: float = 0.2, norm: str = "linf", n: int = 500, steps: int = 20,
                        budget: int = 1000, limit: int | None = None, seed: int = 0,
                        data_dir: str | None = None, download: bool = False,
                        quiet: bool = False) -> dict[str, Any]:
    """Fit every learning technique on ``data``'s train split (the first ``limit`` points, or all),
    let each craft adversarial examples with its own attack on the first ``n`` test points within
    ``norm`` ε, and show them to every technique. Writes ``transfer.md``, ``transfer.csv``,
    ``transfer.json``, ``transfer_heatmap.png`` and ``index.html`` in ``out``."""
    from advlab.evaluation.techniques import LEARNERS, fit_learners, technique_matrix
    from advlab.reports.transfer import transfer_heatmap, write_transfer_page

    names = list(learners) if learners else list(LEARNERS)
    train = load_data(data, split="train", data_dir=data_dir, download=download, limit=limit)
    test = load_data(data, split="test", data_dir=data_dir, download=download, limit=n)
    say(f"fitting {', '.join(names)} on {len(train)} {train.name} training points", quiet)
    fitted = fit_learners(train.x, train.y, learners=names, seed=seed)
    say(f"crafting on each technique ({norm} ε = {eps:g}) and showing {len(test)} test points to every one", quiet)
    m = technique_matrix(fitted, test.x, test.y, eps=eps, norm=norm, steps=steps, budget=budget, seed=seed)
    m.provenance.update({"dataset": train.name, "train_points": len(train), "learners": names})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "transfer.md", "csv": out / "transfer.csv", "json": out / "transfer.json",
             "heatmap": out / "transfer_heatmap.png"}
    crafted = "\n".join(f"- {s}: {m.white_box[s].attack}" for s in m.sources)
    atomic_write_text(files["table"], f"# Cross-technique transferability on {train.name}\n\n{m.table()}\n"
                      f"How each source crafted (every example then projected into the {norm} ε = {eps:g} ball):\n\n"
                      f"{crafted}\n")
    rows = m.to_rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(files["csv"], buf.getvalue())
    atomic_write_text(files["json"], json.dumps({"rows": rows, "clean_accuracy": m.clean_accuracy, "n": m.n,
                                                 "provenance": m.provenance}, indent=2, default=str,
                                                allow_nan=True))
    title = f"Cross-technique transferability on {train.name} ({norm} ε = {eps:g})"
    transfer_heatmap(m, path=files["heatmap"], title=title)
    lr_tree = (f"Logistic regression → decision tree: {100 * m.rate('lr', 'tree'):.1f}% here; Papernot et al. "
               "(2016) report 87.4% on MNIST." if "lr" in m.sources and "tree" in m.targets else "")
    files["html"] = write_transfer_page(out, m, figures={"Transfer success (%): row = source, column = target; "
                                                         "the outlined diagonal is white-box success.":
                                                         files["heatmap"].name}, title=title,
                                        notes=[p for p in (lr_tree, "Each technique crafts with its own white-box "
                                               "attack (see 'crafted with'); minimal-perturbation attacks' examples "
                                               "are projected into the ε-ball, so an example that needed more than ε "
                                               "no longer fools anything.") if p])
    if not quiet:
        print(m.table())
    return {"matrix": m, "files": files}
