"""#12: the results store and the grid: finished cells skipped, failed cells stored and retried,
the worst case across attacks and runs equals the per-point OR of the stored outcomes, bad stores
refused, and the store survives kill -9 and two writers at once."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_MODELS

from advlab.cli import main
from advlab.runs.grid import run_spec
from advlab.runs.results import worst_case
from advlab.runs.spec import load_spec, parse_spec
from advlab.runs.store import SCHEMA_VERSION, Store, StoreError

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _rows(db) -> dict[str, list]:
    """The store's result rows, without timings: what two equivalent runs must share."""
    con = sqlite3.connect(str(db))
    try:
        return {
            "cells": sorted(con.execute("SELECT hash, kind, status, config FROM cells").fetchall()),
            "metrics": sorted(con.execute("SELECT cell, attack, eps, name, value FROM metrics "
                                          "WHERE name NOT IN ('seconds')").fetchall(), key=repr),
            "outcomes": sorted(con.execute("SELECT * FROM outcomes").fetchall(), key=repr),
        }
    finally:
        con.close()


def test_a_rerun_skips_every_finished_cell_and_stores_nothing_twice(finished, capsys):
    spec, db = finished
    before = _rows(db)
    assert {s for *_, s, _ in [(h, k, st, c) for h, k, st, c in before["cells"]]} == {"done"}
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 0
    assert "0 cell(s) done, 7 already done" in capsys.readouterr().out
    assert _rows(db) == before
    assert main(["run", str(spec), "--store", str(db), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "7 cells, 7 done, 0 to run" in out and "todo" not in out


def test_the_worst_case_is_the_per_point_or_of_every_stored_attack(finished):
    _, db = finished
    with Store(db) as store:
        worst = worst_case(store, model="mlp")
        outcomes = store.query("SELECT o.attack, o.eps, o.point, o.clean_correct, o.success, o.norm FROM outcomes o "
                               "JOIN cells c ON c.hash = o.cell WHERE c.model_name = 'mlp'")
    assert {w["eps"] for w in worst} == {0.05, 0.2}
    for w in worst:
        broken = defaultdict(bool)
        clean = {}
        for o in outcomes:
            clean[o["point"]] = o["clean_correct"]
            if o["eps"] == w["eps"] and o["success"]:
                broken[o["point"]] = True
            if o["eps"] == -1 and o["success"] and o["norm"] <= w["eps"]:
                broken[o["point"]] = True       # DeepFool's distance within the ball
        n_correct = sum(clean.values())
        n_broken = sum(1 for p, ok in clean.items() if ok and broken[p])
        assert (w["n"], w["n_correct"], w["n_robust"]) == (60, n_correct, n_correct - n_broken)
        assert "DeepFool (minimal, ‖δ‖ ≤ ε)" in w["attacks"] and {"FGSM", "PGD"} <= set(w["attacks"])
        per_attack = [r for r in outcomes if r["eps"] == w["eps"] and r["attack"] == "PGD" and r["success"]]
        assert w["n_robust"] <= n_correct - len(per_attack)   # never weaker than one attack


def test_results_and_leaderboard_in_every_format(finished, capsys):
    _, db = finished
    assert main(["results", "--store", str(db), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in data["rows"]} == {"mlp", "cnn"} and data["worst_case"]
    assert main(["results", "--store", str(db), "--model", "cnn", "--attack", "pgd", "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.startswith("model,dataset,norm,attack,eps") and ",FGSM," not in csv_text
    assert main(["leaderboard", "--store", str(db)]) == 0
    board = capsys.readouterr().out
    assert "| rank | model |" in board and "| 1 |" in board
    assert main(["results", "--store", str(db.parent / "none.db")]) == 2
    assert "no store at" in capsys.readouterr().err


FAILING = """
[models.bad]
factory = "{file}:net"

[[measure]]
kind = "robust"
models = ["bad", "ok"]
data = "digits"
attacks = ["fgsm"]
eps = [0.1]

[models.ok]
zoo = "mlp"
data = "digits"
epochs = 1
limit = 200

[data.digits]
name = "digits"
n = 30
"""


def test_a_failing_cell_is_stored_with_its_error_the_rest_goes_on_and_the_next_run_retries_it(tmp_path, capsys):
    factory = tmp_path / "nets.py"
    factory.write_text("from pathlib import Path\nfrom torch import nn\n\ndef net():\n"
                       "    if not Path(__file__).with_name('ready').exists():\n"
                       "        raise RuntimeError('not trained yet')\n"
                       "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    spec = tmp_path / "s.toml"
    spec.write_text(FAILING.format(file=factory))
    db = tmp_path / "runs.db"
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "not trained yet" in err
    with Store(db) as store:
        status = {r["label"]: (r["status"], r["error"]) for r in store.query("SELECT label, status, error FROM cells")}
    assert status["fgsm ok"][0] == "done" and status["ok"][0] == "done"
    assert status["fgsm bad"][0] == "failed" and "not trained yet" in status["fgsm bad"][1]
    (tmp_path / "ready").touch()   # the cause goes away; the cell (same hash) is retried
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 0
    assert "1 cell(s) done, 2 already done" in capsys.readouterr().out
    with Store(db) as store:
        assert {r["status"] for r in store.query("SELECT status FROM cells")} == {"done"}
        runs = store.query("SELECT id, status FROM runs ORDER BY id")
    assert [r["status"] for r in runs] == ["failed", "done"]


def test_a_file_that_is_not_a_store_and_a_newer_schema_are_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("hello, I am a text file")
    with pytest.raises(StoreError, match="not an advlab store"):
        Store(junk)
    assert junk.read_text() == "hello, I am a text file"          # nothing overwritten
    db = tmp_path / "new.db"
    Store(db).close()
    con = sqlite3.connect(str(db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="written by a newer advlab"):
        Store(db)
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_cli_errors_for_bad_store_and_spec(tmp_path, tiny_spec, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("x" * 100)
    assert main(["run", str(tiny_spec), "--store", str(junk)]) == 2
    assert "not an advlab store" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_spec.read_text().replace("epochs = 2", "epochz = 2"))
    assert main(["run", str(bad), "--store", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "unknown key 'epochz'" in err and not (tmp_path / "r.db").exists()
    assert main(["run", str(tiny_spec), "--store", str(tmp_path / "r.db"), "--device", "cuda:7"]) == 2 or \
        "cuda" in capsys.readouterr().err


@pytest.mark.parametrize("round_", range(2))
def test_run_killed_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(tmp_path, finished, round_):
    spec, clean_db = finished
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-m", "advlab", "run", str(spec), "--store", str(db), "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(round_).uniform(2.5, 7.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if db.exists():
        con = sqlite3.connect(str(db))
        partial = con.execute("SELECT hash FROM cells WHERE status = 'done'").fetchall()
        for (h,) in partial:   # a done cell has all its rows: never a half-written cell
            assert con.execute("SELECT count(*) FROM metrics WHERE cell = ?", (h,)).fetchone()[0] > 0
        con.close()
    assert subprocess.run(cmd, env=ENV, capture_output=True).returncode == 0
    assert _rows(db) == _rows(clean_db)


def test_two_runs_on_one_store_at_once_do_not_corrupt_it(tmp_path, finished):
    spec, clean_db = finished
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-m", "advlab", "run", str(spec), "--store", str(db), "--no-progress"]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = 0
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        done += int(out.split(" cell(s) done")[0].rsplit(" ", 1)[-1])
    assert _rows(db) == _rows(clean_db)
    # the two runs shared the cells out (claims): none was computed twice
    assert done == 7
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_the_python_api_runs_a_spec(tmp_path, tiny_spec):
    spec = load_spec(tiny_spec)
    seen = []
    with Store(tmp_path / "api.db") as store:
        summary = run_spec(spec, store, progress=False, on_cell=lambda c, s: seen.append((c.kind, s)))
    assert summary.status == "done" and len(summary.done) == len(spec.cells) == 7
    assert seen[0] == ("train", "done") and all(s == "done" for _, s in seen)
    assert (tmp_path / "api.db.files").is_dir()
    trained = [c for c in spec.cells if c.kind == "train"]
    for c in trained:   # the trained models are checkpoints beside the store, named by cell hash
        assert (tmp_path / "api.db.files" / c.hash / "model" / "model.safetensors").is_file()
    assert parse_spec(tiny_spec.read_text()).cells[0].hash == trained[0].hash


THREATS = """
[data.digits]
name = "digits"
n = 30

[models.mlp]
zoo = "mlp"
data = "digits"
epochs = 2

[[measure]]
kind = "robust"
models = ["mlp"]
data = "digits"
attacks = ["fgsm"]
eps = [0.1, 0.3]

[[measure]]
kind = "robust"
threat = "black-box"
models = ["mlp"]
data = "digits"
attacks = ["square"]
budget = 50
eps = [0.1, 0.3]
"""


def test_results_filter_by_threat_keeps_only_that_threats_attacks(tmp_path, capsys):
    from advlab.runs.results import robust_rows

    spec = tmp_path / "threats.toml"
    spec.write_text(THREATS)
    db = tmp_path / "runs.db"
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 0
    with Store(db) as store:
        assert {r["attack"] for r in robust_rows(store)} == {"FGSM", "Square"}
        assert {r["attack"] for r in robust_rows(store, threat="black-box")} == {"Square"}
        assert {r["attack"] for r in robust_rows(store, threat="white-box")} == {"FGSM"}
        assert robust_rows(store, threat="transfer") == []
        black = worst_case(store, threat="black-box")
        both = worst_case(store)
        assert [w["attacks"] for w in black] == [["Square"], ["Square"]]
        assert [w["attacks"] for w in both] == [["FGSM", "Square"], ["FGSM", "Square"]]
        # the worst case over both threats breaks at least what each breaks alone
        white = worst_case(store, threat="white-box")
        for a, b, w in zip(both, black, white):
            assert a["n_robust"] <= min(b["n_robust"], w["n_robust"])
        with pytest.raises(ValueError, match="unknown threat"):
            robust_rows(store, threat="grey-box")
    capsys.readouterr()
    assert main(["results", "--store", str(db), "--threat", "black-box", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "Square" in out and "FGSM" not in out


def test_a_dead_runs_claim_is_taken_over_and_a_live_one_is_waited_for(tmp_path, tiny_spec):
    """Claims: a claim whose process is gone (kill -9) is taken over; the cells that need a model
    a live run holds wait for it, and are failed with a clear reason if that run dies first."""
    import threading

    spec = load_spec(tiny_spec)
    train = [c for c in spec.cells if c.kind == "train"]
    db = tmp_path / "runs.db"
    with Store(db) as store:
        ghost = store.start_run(spec_name="ghost", spec_path=None, spec_text="", executor="local")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        store.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                         (train[0].hash, ghost, __import__("socket").gethostname(), dead.pid, time.time()))
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        store.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                         (train[1].hash, ghost, __import__("socket").gethostname(), sleeper.pid, time.time()))
        threading.Timer(3.0, sleeper.kill).start()
        summary = run_spec(spec, store, progress=False)
        sleeper.wait()
    # the dead claim was taken over: that model trained here; the live one was left to its run
    assert train[0].hash in summary.done and summary.taken == {train[1].hash: ghost}
    needing = {c.hash for c in spec.cells if train[1].hash in c.needs}
    assert needing and set(summary.failed) == needing
    assert all("took and did not finish" in e for e in summary.failed.values())
    # the next run trains it and finishes the grid
    with Store(db) as store:
        again = run_spec(spec, store, progress=False)
        assert not again.failed and set(again.done) == needing | {train[1].hash}
        assert store.query("SELECT count(*) AS n FROM claims")[0]["n"] == 0


AUDITED = """
[data.digits]
name = "digits"
n = 60

[models.mlp]
zoo = "mlp"
data = "digits"
epochs = 2

[[measure]]
kind = "audit"
models = ["mlp"]
data = "digits"
eps = [0.1, 0.3]
steps = 5
max_points = 40
"""


def test_an_audit_cell_stores_each_checks_verdict_and_the_report_shows_it(tmp_path, capsys):
    from advlab.evaluation import audit
    from advlab.models import load
    from advlab.runs.cells import trained_dir
    from advlab.runs.results import audits
    from advlab.data import load_dataset

    spec = tmp_path / "audited.toml"
    spec.write_text(AUDITED)
    db = tmp_path / "runs.db"
    assert main(["run", str(spec), "--store", str(db), "--no-progress"]) == 0
    with Store(db) as store:
        rows = audits(store)
        train = store.query("SELECT hash FROM cells WHERE kind = 'train'")[0]["hash"]
        files = store.files
    assert [(r["model"], r["eps"]) for r in rows] == [("mlp", 0.1), ("mlp", 0.3)]
    # the stored verdicts are the audit's own on the same model and points
    model = load(trained_dir(files, train))
    test = load_dataset("digits", split="test").subset(60)
    for r in rows:
        rep = audit(model, test.x, test.y, eps=r["eps"], steps=5, max_points=40, batch_size=250, seed=0)
        assert r["verdict"] == ("passed" if rep.passed else "MASKED?")
        assert r["failed_checks"] == sorted(c.name for c in rep.failed_checks)
        assert r["n"] == rep.n == 40
    capsys.readouterr()
    assert main(["results", "--store", str(db)]) == 0
    assert "Gradient-masking audits" in capsys.readouterr().out
    assert main(["report", "--store", str(db), "--out", str(tmp_path / "r")]) == 0
    assert 'id="audits"' in (tmp_path / "r" / "index.html").read_text()


def test_an_audit_with_a_zero_eps_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="an audit needs every eps > 0"):
        parse_spec(AUDITED.replace("eps = [0.1, 0.3]", "eps = [0.0, 0.3]"))


def test_a_store_created_by_another_run_while_this_one_opens_it_is_not_called_a_directory(tmp_path, monkeypatch):
    """Reproducer (a full `make test` on a loaded machine): two runs started at once on a new store;
    one checked `exists()` (False), the other created the file, the first then took the second
    `exists()` (True) for "a directory". The store now stats its path once."""
    import pathlib

    db = tmp_path / "runs.db"
    real_exists = pathlib.Path.exists
    calls = {"n": 0}

    def racing_exists(self, *a, **k):  # the file appears between the first and second look
        if self == db:
            calls["n"] += 1
            if calls["n"] == 1:
                return False
            Store(db).close() if not real_exists(db) else None
        return real_exists(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "exists", racing_exists)
    Store(db).close()
    monkeypatch.undo()
    with Store(db) as store:
        assert store.path == db


TRANSFER = """
[study]
name = "transfer"
""" + DIGITS_MODELS + """
[[measure]]
kind = "transfer"
sources = ["cnn"]
targets = ["cnn", "mlp"]
data = "digits"
attacks = [{ name = "mifgsm", steps = 5, decay = 1.0 }, { name = "pgd", steps = 5 }]
eps = [0.1, 0.3]
"""


def test_a_transfer_matrix_crafts_once_per_source_and_matches_crafting_per_target(tmp_path, capsys):
    """Before, every (source, target) cell attacked the source again (a --full matrix of 4 x 4
    paid 16 attacks for 4 sources' worth of examples). Now the examples are crafted once per
    source, attack, ε and seed and read back by the other targets' cells; the outcomes are those
    of crafting on each target's correctly classified points with TransferAttack, point for
    point (MI-FGSM is per-point deterministic)."""
    from advlab.attacks import MIFGSM, TransferAttack
    from advlab.evaluation import clean_predictions
    from advlab.models import load
    from advlab.oracle import Oracle
    from advlab.runs._common import load_data
    from advlab.runs.cells import CRAFTED, trained_dir

    spec_path = tmp_path / "transfer.toml"
    spec_path.write_text(TRANSFER)
    db = tmp_path / "runs.db"
    assert main(["run", str(spec_path), "--store", str(db), "--no-progress"]) == 0
    files = Path(str(db) + ".files")
    crafted = sorted((files / CRAFTED).glob("*.safetensors"))
    assert len(crafted) == 2                      # (MI-FGSM, PGD) from cnn; not one per target
    spec = load_spec(spec_path)
    cells = {c.label: c for c in spec.cells}
    ds = load_data("digits", split="test", limit=60)
    with Store(db) as store:
        for tgt in ("cnn", "mlp"):
            cell = cells[f"mifgsm cnn→{tgt}"]
            source = load(trained_dir(files, cell.config["source"]["cell"]))
            target = load(trained_dir(files, cell.config["model"]["cell"]))
            for eps in (0.1, 0.3):
                rows = store.query("SELECT point, clean_correct, success FROM outcomes WHERE cell = ? AND "
                                   "abs(eps - ?) < 1e-9 ORDER BY point", (cell.hash, eps))
                correct = clean_predictions(target, ds.x) == ds.y
                idx = correct.nonzero().squeeze(1)
                ref = TransferAttack(attack=MIFGSM(eps=eps, steps=5, decay=1.0), source=source)(
                    Oracle(target, output="label"), ds.x[idx], ds.y[idx])
                want = torch.zeros(60, dtype=torch.bool)
                want[idx] = ref.target.success
                assert [bool(r["success"]) for r in rows] == want.tolist(), (tgt, eps)
                assert [bool(r["clean_correct"]) for r in rows] == correct.tolist()
        # a kept file that no longer fits the cell (corrupted) is crafted anew, not trusted
        before = {r["cell"]: r["n"] for r in store.query(
            "SELECT cell, sum(success) AS n FROM outcomes GROUP BY cell")}
    for f in crafted:
        f.write_bytes(b"not a safetensors file")
    with Store(db) as store, store.transaction() as conn:
        conn.execute("DELETE FROM outcomes WHERE cell IN (SELECT hash FROM cells WHERE kind = 'transfer')")
        conn.execute("DELETE FROM metrics WHERE cell IN (SELECT hash FROM cells WHERE kind = 'transfer')")
        conn.execute("DELETE FROM cells WHERE kind = 'transfer'")
    assert main(["run", str(spec_path), "--store", str(db), "--no-progress"]) == 0
    with Store(db) as store:
        after = {r["cell"]: r["n"] for r in store.query("SELECT cell, sum(success) AS n FROM outcomes GROUP BY cell")}
    assert after == before
    capsys.readouterr()


def test_a_cell_set_aside_for_another_runs_model_runs_as_soon_as_that_model_is_done(tmp_path, tiny_spec):
    """A measurement whose model another run on the store is training is set aside, and taken up
    in its place once the model is done, not after everything else. Found 2026-12-07: two quick
    `reproduce` workers each set the bounds study (the heaviest cell, first in the order) aside
    because the other was training one of its models, and both ran it only at the end, alone
    for 185 s after the other worker had finished."""
    from advlab.runs.cells import run_cell

    import dataclasses

    spec = load_spec(tiny_spec)
    cnn = next(c for c in spec.cells if c.kind == "train" and c.label == "cnn")
    measures = [c for c in spec.cells if c.kind != "train"]
    needing = [c.hash for c in measures if cnn.hash in c.needs]
    free = [c.hash for c in measures if cnn.hash not in c.needs]
    assert len(needing) == 2 and len(free) == 3
    # the cnn's measurements first in the order (as the heaviest would be)
    spec = dataclasses.replace(spec, cells=[c for c in spec.cells if c.kind == "train"]
                               + sorted(measures, key=lambda c: c.hash not in needing))
    order: list[str] = []
    with Store(tmp_path / "runs.db") as store:
        other = store.start_run(spec_name="other", spec_path=None, spec_text="", executor="local")
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            store.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                             (cnn.hash, other, __import__("socket").gethostname(), holder.pid, time.time()))

            def on_cell(cell, status):
                order.append(cell.hash)
                if cell.hash == free[0]:   # the other run finishes its model now
                    store.record(cnn, run_cell(cnn.kind, cnn.config, cnn.hash, files=store.files, progress=False),
                                 run_id=other)
                    store.db.execute("DELETE FROM claims WHERE cell = ?", (cnn.hash,))

            summary = run_spec(spec, store, progress=False, on_cell=on_cell)
        finally:
            holder.kill()
            holder.wait()
    assert not summary.failed and summary.taken == {cnn.hash: other}
    ran = [h for h in order if h != cnn.hash]
    # after the first free measurement, the set-aside ones come next, before the free rest
    after = ran[ran.index(free[0]) + 1:]
    assert after[:len(needing)] == needing and after[len(needing):] == free[1:]
