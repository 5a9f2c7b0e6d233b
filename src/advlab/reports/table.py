"""The robust-accuracy table as Markdown (``Evaluation.table()``) and every row field as CSV.

>>> write_table(evaluation, "robust_accuracy.md", "robust_accuracy.csv")
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Any

from advlab._io import atomic_write, atomic_write_text
from advlab.evaluation import EvalRow

CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvalRow))


def write_table(evaluation: Any, path_md: str | os.PathLike[str],
                path_csv: str | os.PathLike[str] | None = None) -> str:
    """Write ``evaluation.table()`` to ``path_md`` and, optionally, every row to ``path_csv``.

    The CSV has one line per :class:`~advlab.evaluation.EvalRow`, in ``evaluation.rows`` order,
    with a header of all the row's fields (``attack, eps, norm, n, n_correct, n_robust,
    clean_accuracy, robust_accuracy, success_rate, median_norm, mean_norm, grads, seconds,
    config``). Floats are written with ``repr``, so they read back exactly; accuracies and rates
    are fractions, as stored (the Markdown table shows percentages).

    Returns:
        The Markdown text written.
    """
    text = evaluation.table()
    md = Path(path_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(md, text if text.endswith("\n") else text + "\n")
    if path_csv is not None:
        out = Path(path_csv)
        out.parent.mkdir(parents=True, exist_ok=True)

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_FIELDS)
                for row in evaluation.rows:
                    writer.writerow([_cell(getattr(row, name)) for name in CSV_FIELDS])

        atomic_write(out, write_csv)
    return text


def _cell(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value
