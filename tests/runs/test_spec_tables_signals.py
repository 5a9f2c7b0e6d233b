"""Specs on tables and signals (issue #14 item 3, the runs layer): `csv:` data in a spec, resolved
against the spec's folder with the file's content in the cells' hashes; a run on breast-cancer, a
CSV table and BasicMotions; the store report draws a signal's stored examples as curves and a
table's as its changed features, not as images."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from advlab.cli import main
from advlab.runs.spec import SpecError, load_spec

HAVE_SIGNALS = any(importlib.util.find_spec(p) is not None for p in ("sktime", "aeon"))


def _wine_csv(path: Path, rows: slice = slice(None)) -> None:
    from sklearn.datasets import load_wine

    d = load_wine()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*d.feature_names, "label"])
        for r, label in list(zip(d.data, d.target))[rows]:
            w.writerow([*r, int(label)])


SPEC = """
[study]
name = "tables"

[data.wine]
name = "csv:wine.csv"
n = 30

[models.mlp]
zoo = "tabular-mlp"
data = "wine"
epochs = 20

[[measure]]
kind = "robust"
models = ["mlp"]
data = "wine"
attacks = ["fgsm", { name = "pgd", steps = 5 }]
eps = [0.05, 0.1]
"""


def test_csv_data_in_a_spec_is_relative_to_the_spec_and_hashed_by_content(tmp_path, monkeypatch):
    """Reproducer: `name = "csv:wine.csv"` in a [data] table was "unknown dataset" (specs took
    npz: and folder: only), and a file data set's cells were hashed by its name alone, so a
    changed file would have reused the old results."""
    folder = tmp_path / "study"
    folder.mkdir()
    _wine_csv(folder / "wine.csv")
    (folder / "spec.toml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)  # not the spec's folder: the path is the spec's, not the shell's
    spec = load_spec(folder / "spec.toml")
    hashes = {c.hash for c in spec.cells}
    data = [c.config["data"] for c in spec.cells]
    assert all(d["name"] == f"csv:{(folder / 'wine.csv').resolve()}" and len(d["sha256"]) == 64 for d in data)

    _wine_csv(folder / "wine.csv", slice(0, 150))  # another file under the same name
    again = load_spec(folder / "spec.toml")
    assert not hashes & {c.hash for c in again.cells}  # every cell (the train cell too) is new

    (folder / "wine.csv").unlink()
    with pytest.raises(SpecError, match=r"spec.toml:\d+: no file .*wine.csv"):
        load_spec(folder / "spec.toml")


def test_registry_data_keep_their_cell_hashes(tmp_path):
    """Old stores' cells stay valid: a registry data set's entry is unchanged (no digest added)."""
    (tmp_path / "s.toml").write_text(SPEC.replace('"csv:wine.csv"', '"wine"'))
    assert all(set(c.config["data"]) <= {"name", "n"} for c in load_spec(tmp_path / "s.toml").cells)


@pytest.mark.skipif(not HAVE_SIGNALS, reason="needs advlab[signals] (sktime or aeon)")
def test_a_spec_on_a_table_and_a_signal_set_runs_and_reports(tmp_path, capsys):
    _wine_csv(tmp_path / "wine.csv")
    (tmp_path / "spec.toml").write_text(SPEC + """
[data.bm]
name = "basic-motions"
n = 20

[models.cnn]
zoo = "cnn1d"
data = "bm"
epochs = 15
batch_size = 8

[[measure]]
kind = "robust"
threat = "black-box"
models = ["cnn"]
data = "bm"
attacks = ["square"]
budget = 100
eps = [0.05]

[[measure]]
kind = "strong"
models = ["mlp"]
data = "wine"
eps = [0.1]
steps = 5
""")
    store = tmp_path / "runs.db"
    assert main(["run", str(tmp_path / "spec.toml"), "--store", str(store), "--no-progress"]) == 0
    assert "failed" not in capsys.readouterr().out
    out = tmp_path / "report"
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    # the signal's examples are curves; the table's are changed features on the page; no image galleries
    assert [n for n in names if "gallery" in n] == ["signal_gallery_cnn_basic-motions_Square_linf.png"]
    page = (out / "index.html").read_text()
    assert "<h2>Changed features: PGD on mlp" in page and "<th>feature</th>" in page
    assert "alcohol" in page  # the CSV header's own feature names, in original units
    assert "could not be" not in page


def test_a_model_measured_on_data_of_another_shape_fails_its_cell_clearly(tmp_path, capsys):
    """Reproducer: a breast-cancer MLP measured on wine failed its cell with torch's "mat1 and
    mat2 shapes cannot be multiplied" from inside nn.Linear; now the cell's error names the shape."""
    _wine_csv(tmp_path / "wine.csv")
    (tmp_path / "spec.toml").write_text(SPEC.replace('data = "wine"\nepochs = 20', 'data = "breast-cancer"\nepochs = 2'))
    assert main(["run", str(tmp_path / "spec.toml"), "--store", str(tmp_path / "r.db"), "--no-progress"]) == 1
    said = capsys.readouterr()
    assert "the model failed on inputs of shape (30, 13)" in said.out + said.err
    assert "a model trained on other data?" in said.out + said.err
