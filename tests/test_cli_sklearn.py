"""scikit-learn estimators as a command's model: ``--sklearn FILE.skops`` (issue #14 item 1).

The estimators are fitted here on the digits train split (flattened), saved with skops, and
evaluated, measured and run through a spec like any model."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytest.importorskip("skops")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from advlab.cli import main  # noqa: E402
from advlab.data.digits import load_digits_dataset  # noqa: E402
from advlab.models import save_sklearn  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sk")
    ds = load_digits_dataset(split="train")
    x, y = ds.x.flatten(1).numpy(), ds.y.numpy()
    out = {}
    for name, est in {"lr": LogisticRegression(max_iter=300), "tree": DecisionTreeClassifier(random_state=0),
                      "knn": KNeighborsClassifier(n_neighbors=3)}.items():
        out[name] = save_sklearn(est.fit(x, y), root / f"{name}.skops")
    out["root"] = root
    return out


def test_a_logistic_regression_is_evaluated_white_box(files, tmp_path):
    out = tmp_path / "lr"
    assert main(["evaluate", "--sklearn", str(files["lr"]), "--data", "digits", "--attacks", "fgsm,pgd",
                 "--eps", "0.05,0.2", "--steps", "10", "--n", "80", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["provenance"]["model"] == "sklearn:LogisticRegression"
    pgd = {r["eps"]: r for r in data["rows"] if r["attack"] == "PGD"}
    assert pgd[0.05]["clean_accuracy"] > 0.9
    assert pgd[0.2]["robust_accuracy"] < pgd[0.05]["robust_accuracy"] < pgd[0.05]["clean_accuracy"]


def test_a_tree_defaults_to_score_based_attacks_and_refuses_gradient_ones(files, tmp_path, capsys):
    out = tmp_path / "tree"
    assert main(["evaluate", "--sklearn", str(files["tree"]), "--data", "digits", "--eps", "0.1,0.3",
                 "--norm", "l2", "--n", "30", "--out", str(out), "--no-progress"]) == 0
    assert "has no gradients" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["attack"] for r in rows} == {"Square", "SimBA", "worst-case"}
    worst = [r for r in rows if r["attack"] == "worst-case"]
    assert worst[-1]["robust_accuracy"] < worst[-1]["clean_accuracy"]
    assert main(["evaluate", "--sklearn", str(files["tree"]), "--data", "digits", "--attacks", "pgd",
                 "--eps", "0.1", "--n", "20", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs gradients" in err and "TreeAttack" in err and "Traceback" not in err


def test_measure_runs_the_tree_attack_on_a_tree(files, tmp_path):
    out = tmp_path / "m"
    assert main(["measure", "--sklearn", str(files["tree"]), "--data", "digits", "--norm", "linf",
                 "--n", "60", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "minimal.json").read_text())
    assert list(data["by_attack"]) == ["Tree attack"]
    # the tree attack is exact: it breaks every correctly classified point, at a distance that is
    # a threshold of the tree (digits' pixel levels are multiples of 1/16; thresholds fall between)
    assert data["summary"]["n_correct"] > 40 and data["summary"]["n_unbroken"] == 0
    d = np.array([v for v, ok in zip(data["distances"], data["correct"]) if ok])
    assert (d > 0).all() and (d <= 1).all()
    assert np.allclose(d * 32, np.round(d * 32), atol=1e-4)


def test_measure_on_a_knn_says_what_to_use(files, tmp_path, capsys):
    assert main(["measure", "--sklearn", str(files["knn"]), "--data", "digits", "--n", "20",
                 "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no gradients" in err and "SoftKNN" in err


def test_bad_estimator_files_are_clear_errors(files, tmp_path, capsys):
    pkl = tmp_path / "m.skops"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    cases = {
        "pickle": (pkl, "pickle"),
        "missing": (tmp_path / "nope.skops", "no estimator file"),
    }
    # classes that are not 0..K-1
    ds = load_digits_dataset(split="train")
    x, y = ds.x.flatten(1).numpy(), ds.y.numpy()
    cases["labels"] = (save_sklearn(LogisticRegression(max_iter=50).fit(x, np.array([f"c{v}" for v in y])),
                                    tmp_path / "s.skops"), "0..K-1")
    # fitted on a different number of features
    cases["features"] = (save_sklearn(LogisticRegression(max_iter=50).fit(x[:, :10], y), tmp_path / "f.skops"),
                         "fitted on 10")
    for name, (path, needle) in cases.items():
        assert main(["evaluate", "--sklearn", str(path), "--data", "digits", "--n", "10", "--eps", "0.1",
                     "--out", str(tmp_path / name), "--no-progress"]) == 2, name
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (name, err)


def test_trust_without_an_estimator_file_is_refused(capsys, tmp_path):
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--trust", "x.Y", "--out", str(tmp_path),
                 "--no-progress"]) == 2
    assert "--trust" in capsys.readouterr().err


def test_a_spec_runs_estimators_and_keeps_their_results_apart(files, tmp_path):
    """Reproducer: every estimator of a spec once got the same store identity ("factory:None"), so
    the worst case per point pooled a logistic regression and a tree into one row."""
    from advlab.runs.results import worst_case
    from advlab.runs.store import Store

    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
[data.digits]
name = "digits"
n = 60

[models.lr]
sklearn = "{files['lr']}"

[models.tree]
sklearn = "{files['tree']}"

[[measure]]
kind = "transfer"
sources = ["lr"]
targets = ["lr", "tree"]
data = "digits"
attacks = [{{ name = "pgd", steps = 5 }}]
eps = [0.2]

[[measure]]
kind = "minimal"
models = ["tree"]
data = "digits"
attacks = ["tree"]
norm = "linf"
""")
    db = tmp_path / "runs.db"
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 0
    with Store(db) as store:
        rows = worst_case(store)
    by_model = {r["model"]: r for r in rows if r["eps"] == 0.2}
    assert set(by_model) == {"lr", "tree"}
    assert by_model["tree"]["clean_accuracy"] < by_model["lr"]["clean_accuracy"]
    # the tree's row pools the transferred PGD and the tree attack; the LR's only its own
    assert any("Tree attack" in a for a in by_model["tree"]["attacks"])
    assert not any("Tree attack" in a for a in by_model["lr"]["attacks"])


def test_transfer_matrix_command_writes_table_heatmap_and_page(tmp_path, capsys):
    out = tmp_path / "tm"
    assert main(["transfer-matrix", "--learners", "lr,tree,knn", "--n", "40", "--eps", "0.2", "--steps", "5",
                 "--out", str(out)]) == 0
    assert "| lr |" in capsys.readouterr().out
    data = json.loads((out / "transfer.json").read_text())
    cells = {(r["source"], r["target"]): r for r in data["rows"]}
    assert set(cells) == {(s, t) for s in ("lr", "tree", "knn") for t in ("lr", "tree", "knn")}
    for s in ("lr", "tree", "knn"):  # the diagonal is the white-box success
        assert cells[(s, s)]["rate"] == pytest.approx(cells[(s, s)]["white_box_rate"])
    assert cells[("tree", "lr")]["source_attack"].startswith("TreeAttack")
    assert "SoftKNN" in cells[("knn", "lr")]["source_attack"]
    page = (out / "index.html").read_text()
    assert "87.4%" in page and "transfer_heatmap.png" in page
    assert (out / "transfer_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["transfer-matrix", "--learners", "lr,xgb", "--out", str(tmp_path / "x")]) == 2
    assert "unknown learners" in capsys.readouterr().err


def test_a_techniques_spec_fits_its_own_learners_and_the_report_draws_them(tmp_path, capsys):
    from advlab.runs.store import Store

    spec = tmp_path / "t.toml"
    spec.write_text('[data.digits]\nname = "digits"\nn = 40\n\n[[measure]]\nkind = "techniques"\n'
                    'data = "digits"\nlearners = ["lr", "tree"]\neps = [0.2]\nsteps = 5\n')
    db = tmp_path / "t.db"
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 0
    with Store(db) as store:
        rows = store.query("SELECT attack FROM metrics WHERE name = 'success_rate'")
    assert {r["attack"] for r in rows} == {f"techniques {s} → {t}" for s in ("lr", "tree") for t in ("lr", "tree")}
    assert main(["report", "--store", str(db), "--out", str(tmp_path / "rep")]) == 0
    assert any(p.name.startswith("transfer_digits_each-technique") for p in (tmp_path / "rep").iterdir())
    bad = tmp_path / "bad.toml"
    bad.write_text('[[measure]]\nkind = "techniques"\ndata = "digits"\nlearners = ["gbm"]\neps = [0.1]\n')
    assert main(["run", str(bad), "--store", str(tmp_path / "b.db")]) == 2
    assert "learners must be a list of" in capsys.readouterr().err
