"""``advlab run --mlflow URI``: each stored cell logged to MLflow, tested against a local file
store; without the extra nothing imports MLflow (issue #12, item 7)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from _helpers import require_peer

from advlab.cli import main


def test_without_mlflow_option_nothing_imports_mlflow(tiny_spec, tmp_path):
    spec = tiny_spec
    code = ("import sys; from advlab.cli import main; "
            f"rc = main(['run', {str(spec)!r}, '--store', {str(tmp_path / 'r.db')!r}, '--dry-run']); "
            "assert 'mlflow' not in sys.modules, 'mlflow was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_missing_extra_names_the_extra_and_stores_nothing(tiny_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)          # as if not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    spec = tiny_spec
    assert main(["run", str(spec), "--store", str(tmp_path / "r.db"), "--mlflow", str(tmp_path / "mlruns")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'advlab[mlflow]'" in err
    assert not (tmp_path / "r.db").exists()


def test_experiment_without_uri_is_refused(tiny_spec, tmp_path, capsys):
    spec = tiny_spec
    assert main(["run", str(spec), "--store", str(tmp_path / "r.db"), "--mlflow-experiment", "x"]) == 2
    assert "--mlflow-experiment needs --mlflow URI" in capsys.readouterr().err


def test_cells_logged_to_a_local_mlflow_file_store_match_the_store(finished, tmp_path, monkeypatch):
    mlflow = require_peer("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # to read it back here (advlab sets it for its run)
    from mlflow.tracking import MlflowClient

    spec, _ = finished
    db = tmp_path / "runs.db"
    uri = (tmp_path / "mlruns").as_uri()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "advlab", "run", str(spec), "--store", str(db), "--no-progress",
                           "--mlflow", uri, "--mlflow-experiment", "tiny study"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    con = sqlite3.connect(db)
    try:
        cells = {h: kind for h, kind in con.execute("SELECT hash, kind FROM cells WHERE status = 'done'")}
        metrics = con.execute("SELECT cell, attack, eps, name, value FROM metrics WHERE value IS NOT NULL").fetchall()
    finally:
        con.close()
    assert f"mlflow: {len(cells)} cell(s) logged to {uri}" in done.stdout
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny study")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_cell = {r.data.tags["advlab.cell"]: r for r in runs}
    assert set(by_cell) == set(cells) and len(runs) == len(cells)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["advlab.kind"] == cells[r.data.tags["advlab.cell"]]
        assert r.data.params["seed"] == "0"
    # every finite metric row of the store is an MLflow metric of its cell, with the same value
    import math

    checked = 0
    for cell, attack, eps, name, value in metrics:
        if not math.isfinite(value):
            continue
        key = "/".join(p for p in (attack, "" if eps is None else f"eps_{eps:g}", name) if p)
        key = key.replace("→", "->")
        assert key.replace(" ", "").replace("->", "").replace("_", "").replace("/", "").replace(".", "").replace(
            "-", "").isalnum(), key   # MLflow's key alphabet
        assert by_cell[cell].data.metrics[key] == pytest.approx(value, rel=1e-12, abs=0), key
        checked += 1
    assert checked > 20
    # a trained model's files are its artifacts (safetensors and card)
    train = next(r for r in runs if r.data.tags["advlab.kind"] == "train")
    names = {a.path for a in client.list_artifacts(train.info.run_id, "model")}
    assert any(n.endswith(".safetensors") for n in names), names
    assert mlflow is not None
