"""write_table: the Markdown table from Evaluation.table() and a CSV that reads back exactly."""

from __future__ import annotations

import csv
import dataclasses
import math

from advlab.evaluation import EvalRow
from advlab.reports import write_table


def test_markdown_is_the_evaluations_table(tmp_path, evaluation):
    md = tmp_path / "t.md"
    text = write_table(evaluation, md)
    assert text == evaluation.table()
    assert md.read_text(encoding="utf-8") == evaluation.table()
    assert "| PGD | 90.0 | 64.0 | 16.5 |" in text
    assert not (tmp_path / "t.csv").exists()


def test_csv_has_every_row_and_field_and_reads_back_exactly(tmp_path, evaluation):
    path = tmp_path / "deep" / "rows.csv"
    write_table(evaluation, tmp_path / "t.md", path)
    with path.open(encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    names = [f.name for f in dataclasses.fields(EvalRow)]
    assert list(records[0]) == names
    assert len(records) == len(evaluation.rows) == 9
    for rec, row in zip(records, evaluation.rows):
        for f in dataclasses.fields(EvalRow):
            stored = getattr(row, f.name)
            if isinstance(stored, float):
                got = float(rec[f.name])
                assert got == stored or (math.isnan(got) and math.isnan(stored)), f.name
            elif isinstance(stored, int):
                assert int(rec[f.name]) == stored, f.name
            else:
                assert rec[f.name] == stored, f.name
    assert records[1]["config"] == "PGD(eps=0.0, norm='linf', bounds=(0.0, 1.0))"  # commas quoted
