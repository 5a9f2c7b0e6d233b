"""The CLI on tables and signals (issue #14 item 3): ``advlab train`` / ``evaluate`` / ``attack``
with a tabular MLP on breast-cancer and a 1-D CNN on BasicMotions; the page shows a table of
changed features for tables and per-channel curves for signals, in place of an image gallery."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
import torch

from advlab.cli import main
from advlab.reports.page import markdown_html

HAVE_SIGNALS = any(importlib.util.find_spec(p) is not None for p in ("sktime", "aeon"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_table_train_evaluate_attack_show_the_changed_features(tmp_path, capsys):
    ckpt = tmp_path / "mlp"
    assert main(["train", "--data", "breast-cancer", "--model", "tabular-mlp", "--epochs", "10", "--out", str(ckpt),
                 "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "427 rows (30,)" in said and "images" not in said
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", "breast-cancer", "--eps", "0.05,0.1",
                 "--attacks", "fgsm,pgd", "--steps", "5", "--out", str(out), "--no-progress"]) == 0
    assert not (out / "gallery.png").exists()
    md = (out / "changed_features.md").read_text()
    assert md.startswith("### Point ") and "| feature | original | adversarial |" in md
    page = (out / "index.html").read_text()
    assert "<h2>Changed features (PGD at ε = 0.1)</h2>" in page and "<th>feature</th>" in page
    rows = list(csv.DictReader((out / "changed_features.csv").open()))
    assert rows and all(not r["feature"].startswith("feature ") for r in rows)  # the data set's own names
    # every listed change is at most ε = 0.1 of the feature's range (the L∞ ball in [0, 1] units)
    assert all(0 < abs(float(r["change_of_range"])) <= 0.1 + 1e-6 for r in rows)

    att = tmp_path / "attack"
    assert main(["attack", "--checkpoint", str(ckpt), "--data", "breast-cancer", "--attack", "pgd", "--eps", "0.1",
                 "--n", "40", "--out", str(att), "--no-progress"]) == 0
    assert (att / "changed_features.md").exists() and not (att / "gallery.png").exists()
    assert "correctly classified of 40 inputs" in capsys.readouterr().out


@pytest.mark.skipif(not HAVE_SIGNALS, reason="needs advlab[signals] (sktime or aeon)")
def test_signal_evaluate_draws_curves_not_an_image_gallery(tmp_path):
    ckpt = tmp_path / "cnn"
    assert main(["train", "--data", "basic-motions", "--model", "cnn1d", "--epochs", "20", "--batch-size", "8",
                 "--out", str(ckpt), "--no-progress"]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", "basic-motions", "--eps", "0.02,0.05",
                 "--attacks", "fgsm,pgd,square", "--steps", "5", "--out", str(out),
                 "--no-progress"]) == 0
    assert (out / "signal_gallery.png").stat().st_size > 10_000 and not (out / "gallery.png").exists()
    page = (out / "index.html").read_text()
    assert 'src="signal_gallery.png"' in page and "clean curve (solid)" in page
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["attack"] for r in rows} >= {"FGSM", "PGD", "Square"}


def test_markdown_html_reads_headings_tables_and_paragraphs_and_escapes():
    lines = markdown_html("### Point <1>\n\n| a | b |\n|---|---:|\n| x & y | 1.5 |\n\nOne\nparagraph.\n")
    assert lines == ["<h3>Point &lt;1&gt;</h3>", "<table>", "<tr><th>a</th><th>b</th></tr>",
                     '<tr><td>x &amp; y</td><td class="num">1.5</td></tr>', "</table>", "<p>One paragraph.</p>"]


def test_a_csv_table_is_split_not_tested_on_its_training_rows(tmp_path, capsys):
    """Reproducer: `--data csv:FILE` gave the trainer and the test set the same 178 rows (the
    registry called load_csv without the split)."""
    from sklearn.datasets import load_wine

    from advlab.data import load_dataset

    d = load_wine()
    path = tmp_path / "wine.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*d.feature_names, "label"])
        w.writerows([*row, label] for row, label in zip(d.data, d.target))
    train, test = load_dataset(f"csv:{path}", split="train"), load_dataset(f"csv:{path}", split="test")
    assert len(train) + len(test) == 178 and len(test) > 0
    rows = {tuple(r.tolist()) for r in train.x}
    assert not any(tuple(r.tolist()) in rows for r in test.x)
    assert main(["train", "--data", f"csv:{path}", "--model", "tabular-mlp", "--epochs", "5",
                 "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    assert f"on {len(test)} rows" in capsys.readouterr().out


def test_strong_evaluation_of_a_binary_table(tmp_path, capsys):
    """Reproducer: `advlab evaluate --strong --data breast-cancer` stopped at APGD-T with "the
    targeted DLR loss needs at least 4 classes, the model has 2". It now runs the whole standard
    list, APGD-T on the targeted margin, and says so in one warning line (no source location)."""
    ckpt = tmp_path / "mlp"
    assert main(["train", "--data", "breast-cancer", "--model", "tabular-mlp", "--epochs", "10", "--out", str(ckpt),
                 "--no-progress"]) == 0
    out = tmp_path / "strong"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", "breast-cancer", "--eps", "0.1",
                 "--attacks", "pgd", "--steps", "10", "--n", "40", "--strong", "--strong-version", "standard",
                 "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr()
    assert "advlab evaluate: warning: APGD-T: the targeted DLR loss needs at least 4 classes" in said.err
    assert "runpy" not in said.err and "Warning:" not in said.err
    rows = {r["attack"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    chain = "APGD-CE → APGD-T → FAB-T → Square"
    assert chain in rows and "worst-case" in rows
    # the cascade's worst case is never above PGD's robust accuracy on the same points
    assert rows["worst-case"]["robust_accuracy"] <= rows["PGD"]["robust_accuracy"] + 1e-9
