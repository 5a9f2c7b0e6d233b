"""#13: certificates in the runs layer and the CLI: the ``certify`` spec kind (smoothing and IBP,
trained by the ``gaussian`` and ``ibp`` recipes), ``advlab certify``, and L0 evaluations."""

from __future__ import annotations

import json
import sqlite3

import pytest

from advlab.cli import main
from advlab.runs.grid import run_spec
from advlab.runs.spec import SpecError, parse_spec
from advlab.runs.store import Store

SPEC = """
[data.digits]
name = "digits"
n = 60

[models.plain]
zoo = "mlp"
data = "digits"
epochs = 20
lr = 0.003

[models.ibp]
zoo = "mlp"
data = "digits"
epochs = 20
lr = 0.003
recipe = "ibp"
recipe_eps = 0.02

[models.noise]
zoo = "small-cnn"
data = "digits"
epochs = 2
recipe = "gaussian"
sigma = 0.25

[[measure]]
kind = "certify"
method = "ibp"
models = ["ibp", "plain"]
data = "digits"
eps = [0.0, 0.01, 0.02]

[[measure]]
kind = "certify"
method = "smoothing"
models = ["noise"]
data = "digits"
eps = [0.0, 0.25]
samples = 200
"""


def _metrics(db) -> dict[tuple[str, float, str], float]:
    con = sqlite3.connect(str(db))
    try:
        rows = con.execute("SELECT cells.label, metrics.eps, metrics.name, metrics.value FROM metrics "
                           "JOIN cells ON cells.hash = metrics.cell").fetchall()
    finally:
        con.close()
    return {(label, eps, name): value for label, eps, name, value in rows}


def test_the_certify_kind_stores_certificates_that_pgd_never_breaks(tmp_path):
    spec = parse_spec(SPEC, path=tmp_path / "spec.toml")
    with Store(tmp_path / "runs.db") as store:
        summary = run_spec(spec, store, progress=False, threads=1)
    assert not summary.failed
    m = _metrics(tmp_path / "runs.db")
    # the IBP-trained MLP (ε and κ ramped over the first half): verified well above the plain
    # one (measured: 95.0% and 90.0% at 0.01 and 0.02; the plain MLP 0%)
    assert m[("ibp ibp", 0.02, "certified_accuracy")] >= 0.7
    assert m[("ibp plain", 0.02, "certified_accuracy")] <= 0.1
    for label in ("ibp ibp", "ibp plain"):
        for e in (0.01, 0.02):
            # a certificate is a lower bound of what PGD leaves, and PGD breaks no verified point
            assert m[(label, e, "certified_accuracy")] <= m[(label, e, "pgd_robust_accuracy")] + 1e-9
            assert m[(label, e, "verified_broken_by_pgd")] == 0
    # randomized smoothing: certified accuracy falls with the radius, abstentions are counted
    s0, s1 = m[("smoothing noise", 0.0, "certified_accuracy")], m[("smoothing noise", 0.25, "certified_accuracy")]
    assert 0.3 <= s1 <= s0
    assert ("smoothing noise", -1.0, "abstained") in m
    # the per-point radii are the outcomes' norms: the 0.25 row counts exactly those >= 0.25
    con = sqlite3.connect(str(tmp_path / "runs.db"))
    try:
        radii = [r for (r,) in con.execute(
            "SELECT outcomes.norm FROM outcomes JOIN cells ON cells.hash = outcomes.cell "
            "WHERE cells.label = 'smoothing noise'")]
    finally:
        con.close()
    assert len(radii) == 60
    assert sum(1 for r in radii if r is not None and r >= 0.25) == round(60 * s1)


@pytest.mark.parametrize("old, new, message", [
    ('method = "ibp"\n', 'method = "crown"\n', "method must be smoothing or ibp"),
    ("samples = 200", "samples = 200\nalpha = 1.5", "strictly between 0 and 1"),
    ('sigma = 0.25', 'sigma = 0.25\nkappa = 2', "unknown key"),
])
def test_a_bad_certify_spec_is_refused(tmp_path, old, new, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(SPEC.replace(old, new, 1), path=tmp_path / "spec.toml")


def test_advlab_certify_writes_its_table_figure_and_json(tmp_path):
    ckpt = tmp_path / "cnn"
    assert main(["train", "--data", "digits", "--model", "small-cnn", "--epochs", "3", "--seed", "0",
                 "--out", str(ckpt), "--no-progress"]) == 0
    out = tmp_path / "smooth"
    assert main(["certify", "--checkpoint", str(ckpt), "--method", "smoothing", "--sigma", "0.25",
                 "--samples", "200", "--n", "30", "--radii", "0,0.25,0.5", "--out", str(out)]) == 0
    data = json.loads((out / "certify.json").read_text())
    assert data["method"] == "smoothing" and len(data["radius"]) == 30
    acc = [r["certified_accuracy"] for r in data["rows"]]
    assert acc == sorted(acc, reverse=True)
    assert all(r["certified"] == sum(1 for v in data["radius"] if v >= r["radius"] and v > 0) for r in data["rows"])
    assert (out / "certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "certified" in (out / "index.html").read_text()
    out = tmp_path / "ibp"
    assert main(["certify", "--checkpoint", str(ckpt), "--method", "ibp", "--n", "30", "--radii", "0,0.01",
                 "--pgd-steps", "5", "--out", str(out)]) == 0
    rows = json.loads((out / "certify.json").read_text())["rows"]
    assert rows[1]["certified_accuracy"] <= rows[1]["pgd_robust_accuracy"] and rows[1]["verified_broken_by_pgd"] == 0
    # L0: the sparse attacks evaluate over a feature budget; mixed with an Lp attack, a clear error
    ev = tmp_path / "l0"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--attacks", "jsma,pgd-l0", "--eps", "1,4",
                 "--n", "30", "--out", str(ev), "--no-progress"]) == 0
    res = json.loads((ev / "results.json").read_text())
    assert {r["norm"] for r in res["rows"]} == {"l0"}
    assert main(["evaluate", "--checkpoint", str(ckpt), "--attacks", "jsma,pgd", "--eps", "1",
                 "--n", "10", "--out", str(tmp_path / "bad")]) != 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--attacks", "pgd", "--norm", "l0", "--eps", "1",
                 "--n", "10", "--out", str(tmp_path / "bad2")]) != 0
    # a fractional feature budget is refused before anything runs
    assert main(["evaluate", "--checkpoint", str(ckpt), "--attacks", "jsma", "--eps", "1.5",
                 "--n", "10", "--out", str(tmp_path / "bad3")]) != 0
    assert not (tmp_path / "bad3").exists()


L0_SPEC = """
[data.digits]
name = "digits"
n = 40

[models.cnn]
zoo = "small-cnn"
data = "digits"
epochs = 2

[[measure]]
kind = "robust"
models = ["cnn"]
data = "digits"
norm = "l0"
attacks = ["jsma", { name = "pgd-l0", steps = 10 }]
eps = [1, 4]

[[measure]]
kind = "minimal"
models = ["cnn"]
data = "digits"
attacks = [{ name = "lbfgs", steps = 10, binary_search_steps = 3 }]
"""


def test_sparse_and_lbfgs_attacks_run_as_spec_cells(tmp_path):
    """Reproducer: a spec's cells passed norm= to every attack whose class lists a norm in
    __dataclass_fields__, ClassVars included, so L-BFGS, JSMA and PGD-L0 cells failed with
    "does not take norm"."""
    spec = parse_spec(L0_SPEC, path=tmp_path / "spec.toml")
    with Store(tmp_path / "runs.db") as store:
        summary = run_spec(spec, store, progress=False, threads=1)
    assert not summary.failed
    m = _metrics(tmp_path / "runs.db")
    for label in ("jsma cnn", "pgdl0 cnn"):
        assert m[(label, 4.0, "robust_accuracy")] <= m[(label, 1.0, "robust_accuracy")]
    assert any(k[0] == "lbfgs cnn" and k[2] == "median_norm" for k in m)
    with pytest.raises(SpecError, match='needs norm = "l0"'):
        parse_spec(L0_SPEC.replace('norm = "l0"\n', "", 1), path=tmp_path / "s.toml")
    with pytest.raises(SpecError, match="whole number"):
        parse_spec(L0_SPEC.replace("eps = [1, 4]", "eps = [0.5, 4]"), path=tmp_path / "s.toml")
    with pytest.raises(SpecError, match="sparse attacks"):
        parse_spec(L0_SPEC.replace('attacks = ["jsma", { name = "pgd-l0", steps = 10 }]', 'attacks = ["pgd"]'),
                   path=tmp_path / "s.toml")
