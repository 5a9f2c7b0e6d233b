"""`advlab reproduce` (issue #15): the tests behind the verdicts, every claim's spec at every size,
the verdict logic on synthetic stores (a claim that does not hold is reported so), and the whole
thing end to end on the tiny setting: resumable, and the page's numbers are the store's."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from advlab.cli import main
from advlab.reproduce import reproduce
from advlab.reproduce.claims import CLAIMS, NOT_REPRODUCED, NOT_RUN, REPRODUCED, SETTINGS, TINY, Evidence, claim
from advlab.reproduce.stats import compare, paired_bootstrap, sign_test, wilson
from advlab.runs.cells import technique_label
from advlab.runs.spec import parse_spec
from advlab.runs.store import Store


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the statistics --------------------------------------------------------------------------

def test_sign_test_is_the_exact_binomial():
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    # 7 vs 2: 2 * P(X <= 2), X ~ Bin(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert sign_test(7, 2) == pytest.approx(2 * 46 / 512)
    assert sign_test(2, 7) == sign_test(7, 2)
    with pytest.raises(ValueError):
        sign_test(-1, 2)


def test_wilson_and_bootstrap():
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson(0, 0))
    a = np.array([1] * 60 + [0] * 40, dtype=bool)
    b = np.array([1] * 40 + [0] * 60, dtype=bool)
    lo, hi = paired_bootstrap(a, b)
    assert lo <= 0.2 <= hi and lo > 0  # a real +20-point difference, interval excludes 0
    p = compare(a, b)
    assert (p.a_only, p.b_only) == (20, 0) and p.greater() and not p.lower()
    assert not compare(b, b).greater() and compare(b, b).p == 1.0


# --- every claim's spec ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(SETTINGS))
def test_every_claims_spec_expands_at_every_size(mode):
    for c in CLAIMS.values():
        spec = parse_spec(c.spec(SETTINGS[mode]))
        assert spec.cells, c.key
    # claims share their models: the same model (architecture, options, recipe, training images) is one train cell
    trains = {}
    for c in CLAIMS.values():
        for cell in parse_spec(c.spec(SETTINGS[mode])).cells:
            if cell.kind == "train":
                key = (cell.config["architecture"], cell.config["recipe"]["name"], cell.config["limit"],
                       str(cell.config.get("options")))
                trains.setdefault(key, set()).add(cell.hash)
    assert all(len(h) == 1 for h in trains.values()), trains


def test_claims_are_found_by_key_or_number():
    assert claim("1") is claim("mifgsm-transfer") and claim("21").key == "panda"
    with pytest.raises(ValueError, match="unknown claim 'nope'; claims: 1 mifgsm-transfer"):
        claim("nope")


# --- the verdicts, on synthetic stores ---------------------------------------------------------

def _fill(store: Store, cells, outcomes_of) -> None:
    """Mark ``cells`` done and store, per cell and ε, the outcomes ``outcomes_of(cell, eps)``
    returns (``(clean_correct, success)`` arrays) or metric rows (a list of dicts)."""
    with store.transaction() as db:
        for c in cells:
            db.execute("INSERT OR REPLACE INTO cells (hash, kind, label, config, status, seconds, updated) "
                       "VALUES (?, ?, ?, ?, 'done', 0, 0)", (c.hash, c.kind, c.label, json.dumps(c.config)))
            for e in c.config.get("eps", []):
                got = outcomes_of(c, e)
                if got is None:
                    continue
                if isinstance(got, list):
                    for m in got:
                        db.execute("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                                   (c.hash, m["attack"], e, m["name"], m["value"]))
                    continue
                correct, success = got
                for i, (cc, s) in enumerate(zip(correct, success)):
                    db.execute("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                               (c.hash, "x", e, i, int(cc), int(s)))


def _rate(n: int, k: int, seed: int) -> np.ndarray:
    """``n`` outcomes with the first ``k`` of a seeded permutation True."""
    out = np.zeros(n, dtype=bool)
    out[np.random.default_rng(seed).permutation(n)[:k]] = True
    return out


@pytest.mark.parametrize("mi, ifgsm, expect", [(60, 20, REPRODUCED), (20, 60, NOT_REPRODUCED), (30, 30, NOT_REPRODUCED)])
def test_claim_1_verdict_follows_the_numbers(tmp_path, mi, ifgsm, expect):
    c = claim("mifgsm-transfer")
    spec = parse_spec(c.spec(TINY))
    n = 100

    def outcomes(cell, eps):
        a = cell.config["attack"]["name"]
        white = cell.config["source"]["name"] == cell.config["model"]["name"]
        pct = 95 if white else {"mifgsm": mi, "ifgsm": ifgsm, "fgsm": 25}[a]
        return np.ones(n, dtype=bool), _rate(n, pct, seed=int(cell.hash[:8], 16))

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, outcomes)
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == expect, f.summary
    assert f"MI-FGSM {mi:.1f}%" in f.summary and f"I-FGSM {ifgsm:.1f}%" in f.summary
    if expect == NOT_REPRODUCED:
        assert "does not transfer significantly better than I-FGSM" in f.summary
    assert len(f.figures) == 3 and all(p.is_file() for _, p in f.figures)


@pytest.mark.parametrize("k, expect", [(90, REPRODUCED), (40, NOT_REPRODUCED), (55, NOT_REPRODUCED)])
def test_claim_15_verdict_is_the_wilson_interval_above_half(tmp_path, k, expect):
    c = claim("techniques")
    spec = parse_spec(c.spec(TINY))
    learners = spec.cells[0].config["learners"]

    def metrics(cell, eps):
        rows = []
        for s in learners:
            for t in learners:
                got = k if (s, t) == ("lr", "tree") else 30
                rows += [{"attack": technique_label(s, t), "name": "transferred", "value": got},
                         {"attack": technique_label(s, t), "name": "target_correct", "value": 100}]
        return rows

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, metrics)
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == expect and f"({k}/100)" in f.summary  # 55/100: Wilson low 45%, not above 50%


def test_a_claim_whose_cells_are_missing_is_not_run(tmp_path):
    c = claim("fgsm-mix")
    spec = parse_spec(c.spec(TINY))
    with Store(tmp_path / "s.db") as store:
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == NOT_RUN and "never run" in f.summary


# --- end to end, tiny --------------------------------------------------------------------------

HARNESS = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="f" src="index.html" style="width:1200px;height:800px"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var doc = this.contentDocument, imgs = Array.from(doc.images);
  var rows = Array.from(doc.querySelectorAll("#table-8 tr")).map(function (tr) {
    return Array.from(tr.children).map(function (td) { return td.textContent; }); });
  var verdicts = Array.from(doc.querySelectorAll("h2 .verdict")).map(function (s) {
    return [s.getAttribute("data-claim"), s.getAttribute("data-verdict")]; });
  document.getElementById("result").textContent = JSON.stringify({
    images: imgs.length, loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    rows: rows, verdicts: verdicts});
});
</script></body></html>"""


def _rows(db):
    with Store(db) as store:
        return [tuple(r) for r in store.query("SELECT cell, attack, eps, point, clean_correct, success FROM outcomes "
                                              "ORDER BY cell, attack, eps, point")]


def test_two_workers_share_the_cells_and_store_the_one_process_rows(tmp_path):
    """`--workers 2`: a second process on the same store runs its share of the cells (the quick run
    took 20 min 42 s in one process on 2 cores, its small models keeping 1.4 threads busy); the
    rows equal one process's, each cell runs once, and the page is judged after both finished."""
    keys = ["eps-list", "panda"]
    quiet = dict(mode="tiny", progress=False, threads=1, say=lambda _: None)
    reproduce(keys, store=tmp_path / "one.db", out=tmp_path / "one", **quiet)
    page = reproduce(keys, store=tmp_path / "two.db", out=tmp_path / "two", workers=2, **quiet)
    assert page.exists() and _rows(tmp_path / "two.db") == _rows(tmp_path / "one.db")
    with Store(tmp_path / "two.db") as store:
        assert len(store.query("SELECT id FROM runs")) == 2            # the helper ran on this store too
        assert not store.query("SELECT hash FROM cells WHERE status != 'done'")
        assert not store.query("SELECT cell FROM claims")              # both released their claims
    assert (tmp_path / "two" / "workers" / "worker-1.log").exists()
    import re

    verdicts = [re.findall(r'data-claim="(\d+)" data-verdict="([^"]+)"', (tmp_path / d / "index.html").read_text())
                for d in ("one", "two")]
    assert verdicts[0] == verdicts[1] and {n for n, _ in verdicts[0]} == {str(claim(k).number) for k in keys}
    assert "not run" not in {v for _, v in verdicts[1]}


@pytest.mark.parametrize("mode", ["quick", "full", "tiny"])
def test_schedule_puts_the_longest_chain_first_and_keeps_every_cell_once(mode):
    """The order worker processes take cells in. On 2026-12-07 two quick workers took cells in claim
    order: the PGD-trained model ended at 436 s, the bounds study on it (260 s, the heaviest cell)
    started at 631 s and ran alone to 891 s while the other worker had finished at 720 s."""
    from advlab.reproduce import schedule

    seen: dict = {}
    for c in CLAIMS.values():
        for cell in parse_spec(c.spec(SETTINGS[mode])).cells:
            seen.setdefault(cell.hash, cell)
    given = list(seen.values())
    order = schedule(given)
    assert sorted(c.hash for c in order) == sorted(seen) and len(order) == len(given)
    kinds = [c.kind for c in order]
    first_measure = kinds.index(next(k for k in kinds if k != "train"))
    assert set(kinds[:first_measure]) == {"train"} and "train" not in kinds[first_measure:]
    assert order[0].label == "cnnpgd" and order[0].config["recipe"]["name"] == "pgd"
    bounds = order[first_measure]
    assert bounds.kind == "study" and bounds.config["study"] == "bounds"
    place = {c.hash: i for i, c in enumerate(order)}
    for c in order:                      # every model before every measurement that needs it
        assert all(place[h] < place[c.hash] for h in c.needs)
    assert {place[h] for h in bounds.needs} == set(range(len(bounds.needs)))  # its models the first trained
    # the rest keeps the claims' order among equals: the transfer cells as the claims gave them
    transfers = [c.hash for c in given if c.kind == "transfer"]
    assert [c.hash for c in order if c.kind == "transfer"] == transfers


@pytest.mark.parametrize("cores, extra, expect", [(2, [], 2), (16, [], 2), (1, [], 1), (2, ["--workers", "3"], 3),
                                                  (2, ["--executor", "ray"], 1), (2, ["--no-run"], 1),
                                                  (2, ["--no-judge"], 1), (2, ["--device", "cuda"], 1)])
def test_the_cli_runs_two_workers_on_two_cores_by_default(monkeypatch, tmp_path, cores, extra, expect):
    """`advlab reproduce --quick` itself (the issue's command) fits 15 minutes on 2 cores only as two
    one-thread workers (11 min 13 s; one process of two threads: 15 min 25 s, measured 2026-12-07);
    a helper worker (--no-judge), Ray, a judge-only run and a GPU stay one process."""
    import advlab.reproduce as rp

    seen = {}
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(rp, "reproduce", lambda *a, **k: seen.update(k) or tmp_path / "index.html")
    assert main(["reproduce", "panda", "--tiny", "--store", str(tmp_path / "s.db"), "--out", str(tmp_path),
                 *extra]) == 0
    assert seen["workers"] == expect


@pytest.mark.parametrize("bad, match", [(dict(workers=0), "whole number"), (dict(workers=True), "whole number"),
                                        (dict(workers=2, executor="ray"), "local executor"),
                                        (dict(workers=2, run=False), "local executor")])
def test_workers_refuse_what_they_cannot_do(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        reproduce(["panda"], mode="tiny", store=tmp_path / "s.db", out=tmp_path / "o", progress=False, **bad)


def test_reproduce_tiny_end_to_end_resumes_and_the_page_shows_the_stores_numbers(tmp_path, capsys):
    db, out = tmp_path / "repro.db", tmp_path / "page"
    assert main(["reproduce", "--tiny", "--store", str(db), "--out", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert said.count("claim ") == len(CLAIMS) and f"report written to {out / 'index.html'}" in said
    with Store(db) as store:
        first = {r["hash"]: r["updated"] for r in store.query("SELECT hash, updated FROM cells")}
        assert not store.query("SELECT hash FROM cells WHERE status != 'done'")
        # claim 8's numbers, straight from the outcomes table
        spec = parse_spec(claim("eps-list").spec(TINY))
        expect = {}
        for cell in spec.cells:
            if cell.kind != "robust":
                continue
            acc = []
            for e in cell.config["eps"]:
                rows = store.query("SELECT clean_correct, success FROM outcomes WHERE cell = ? AND abs(eps - ?) < 1e-9",
                                   (cell.hash, e))
                acc.append(sum(r["clean_correct"] and not r["success"] for r in rows) / len(rows))
            expect[cell.config["model"]["architecture"]] = [f"{100 * a:.1f}%" for a in acc]
    # again: every cell is reused, none recomputed
    page = reproduce(None, mode="tiny", store=db, out=out, progress=False, say=lambda s: None)
    with Store(db) as store:
        assert {r["hash"]: r["updated"] for r in store.query("SELECT hash, updated FROM cells")} == first
    # --no-run judges from the store alone: the same page; on a store missing a claim's cells, "not run"
    assert main(["reproduce", "--tiny", "--no-run", "--store", str(db), "--out", str(tmp_path / "judged"),
                 "--no-progress"]) == 0
    assert "judging only (--no-run)" in capsys.readouterr().out
    strip = lambda t: t.split("<h2>Summary</h2>")[1].split("<h2>Provenance</h2>")[0]  # noqa: E731
    assert strip((tmp_path / "judged" / "index.html").read_text()) == strip(page.read_text())
    with Store(db) as store:
        assert {r["hash"]: r["updated"] for r in store.query("SELECT hash, updated FROM cells")} == first
        gone = [c.hash for k in ("panda", "techniques") for c in parse_spec(claim(k).spec(TINY)).cells
                if c.kind != "train"]
        with store.transaction() as tx:
            tx.executemany("DELETE FROM cells WHERE hash = ?", [(h,) for h in gone])
    reproduce(["panda", "techniques", "eps-list"], mode="tiny", store=db, out=tmp_path / "part", run=False,
              say=lambda s: None)
    part = (tmp_path / "part" / "index.html").read_text()
    assert part.count('data-verdict="not run"') == 2 * 2 and 'data-claim="8" data-verdict="not run"' not in part
    with pytest.raises(FileNotFoundError, match="nothing to judge without running"):
        reproduce(None, mode="tiny", store=tmp_path / "none.db", out=tmp_path / "x", run=False, say=lambda s: None)

    text = page.read_text()
    for c in CLAIMS.values():
        assert f'id="claim-{c.number}"' in text
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("ADVLAB_REQUIRE_PEERS"):
            pytest.fail("chromium is not installed (apt-get install chromium); the reproduce page test needs it")
        pytest.skip("no chromium on this machine")
    (out / "check.html").write_text(HARNESS)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=10000", "--dump-dom", (out / "check.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    raw = dom.stdout.split('<pre id="result">')[1].split("</pre>")[0]
    result = json.loads(raw.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert result["images"] >= len(CLAIMS) and result["loaded"] == result["images"], result
    assert {int(k) for k, _ in result["verdicts"]} == {c.number for c in CLAIMS.values()}
    assert all(v in (REPRODUCED, NOT_REPRODUCED) for _, v in result["verdicts"]), result["verdicts"]
    shown = {r[0]: r[1:] for r in result["rows"][1:]}
    assert shown == expect  # what a reader sees is the store's, to the tenth of a percent


def test_reproduce_on_ray_stores_the_local_rows(tmp_path):
    """`advlab reproduce --executor ray`: the claims' cells run as Ray tasks (one cluster for all),
    and the rows, hence the verdicts and the page's numbers, are the local executor's."""
    from _helpers import require_peer

    require_peer("ray")
    keys = ["eps-list", "panda"]
    reproduce(keys, mode="tiny", store=tmp_path / "local.db", out=tmp_path / "local", progress=False, threads=1,
              say=lambda s: None)
    reproduce(keys, mode="tiny", store=tmp_path / "ray.db", out=tmp_path / "ray", executor="ray",
              progress=False, threads=1, say=lambda s: None)

    def rows(db):
        with Store(db) as store:
            return sorted(tuple(r) for r in store.query("SELECT cell, attack, eps, point, clean_correct, success "
                                                        "FROM outcomes"))
    assert rows(tmp_path / "ray.db") == rows(tmp_path / "local.db") and rows(tmp_path / "local.db")
    with Store(tmp_path / "ray.db") as store:
        assert store.query("SELECT executor FROM runs")[0]["executor"] == "ray"
    local, ray = (tmp_path / "local" / "index.html").read_text(), (tmp_path / "ray" / "index.html").read_text()
    cut = lambda t: t.split('<h2 id="claim-8">')[1].split("<h2")[0]  # noqa: E731
    assert cut(local) == cut(ray)


@pytest.mark.parametrize("last, expect", [(0.05, REPRODUCED), (0.40, NOT_REPRODUCED)])
def test_claim_8_verdict_needs_a_collapse(tmp_path, last, expect):
    """Accuracy that falls to 5% collapses; one that keeps 40% at ε = 0.7 is reported as not reproduced."""
    c = claim("eps-list")
    spec = parse_spec(c.spec(TINY))
    n = 200
    eps = [e for cell in spec.cells if cell.kind == "robust" for e in cell.config["eps"]][:5]
    acc = dict(zip(eps, np.linspace(0.9, last, len(eps))))

    def outcomes(cell, e):
        if cell.kind != "robust":
            return None
        correct = np.ones(n, dtype=bool)
        return correct, ~_rate(n, int(round(acc[e] * n)), seed=1)  # robust on the first acc·n of a permutation

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, outcomes)
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == expect and f"{100 * last:.1f}%" in f.summary
    if expect == NOT_REPRODUCED:
        assert "keeps more than 10%" in f.summary


def test_claim_18_vat_that_does_not_help_is_not_reproduced(tmp_path):
    c = claim("vat")
    spec = parse_spec(c.spec(TINY))
    n = 300

    def outcomes(cell, e):
        return None

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, outcomes)
        with store.transaction() as db:
            for cell in spec.cells:
                for label, k in (("supervised", 240), ("vat", 238)):
                    for i, ok in enumerate(_rate(n, k, seed=3)):
                        db.execute("INSERT INTO outcomes VALUES (?, ?, 0.0, ?, 1, ?, NULL, NULL)",
                                   (cell.hash, label, i, int(ok)))
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == NOT_REPRODUCED and "79.3% vs supervised only 80.0%" in f.summary


def test_the_bounds_study_stores_theorem_2_on_projected_points(tmp_path):
    """Claim 16's study with Theorem 2 (left out of the quick and tiny claims for its cost: every
    query is projected onto the generator's range): the projected robustness of f̃ and r_in at each
    projected point are outcome rows, and Theorem 2's r_unc(f̃) ≥ ½ r_in holds there."""
    from advlab.runs.grid import run_spec

    spec = parse_spec("""
[data.d]
name = "digits"
n = 30
[models.mlp]
zoo = "mlp"
data = "digits"
epochs = 2
[[measure]]
kind = "study"
study = "bounds"
models = ["mlp"]
data = "d"
eps = [0.0]
points = 4
vae_epochs = 1
projected_n = 1
query_budget = 50
projection_steps = 40
""")
    with Store(tmp_path / "b.db") as store:
        assert run_spec(spec, store, progress=False, threads=1).status == "done"
        cell = [c for c in spec.cells if c.kind == "study"][0]
        ev = Evidence(store, spec.cells)
        from advlab.reproduce.claims import _labelled

        kept, found, r_p = _labelled(ev, cell, "r_unc_projected mlp", 0.0)
        _, _, r_t = _labelled(ev, cell, "r_in_tight mlp", 0.0)
        _, _, r_in = _labelled(ev, cell, "r_in mlp", 0.0)
        assert r_p.shape == (1,) and r_in.shape == (4,)
        use = kept & found
        assert use.all() and (r_p[use] >= 0.5 * r_t[use] - 1e-6).all()
        assert ev.metric(cell, "lipschitz", attack="bounds") > 0


def _study_rows(db, cell, label: str, correct, success, norm) -> None:
    for i, (cc, s, v) in enumerate(zip(correct, success, norm)):
        db.execute("INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                   (cell.hash, label, 0.0 if label.split()[0] in ("clean", "noise") or label.startswith(("latent", "r_", "joint"))
                    else float(cell.config["eps"][-1]), i, int(cc), int(s), None if v is None else float(v)))


@pytest.mark.parametrize("case, expect, why", [
    ("holds", REPRODUCED, ""),
    ("confident", NOT_REPRODUCED, "its units are not significantly lower on the examples that fool it"),
    ("not robust", NOT_REPRODUCED, "it is not significantly more robust under PGD"),
])
def test_claim_19_verdict_reads_robustness_training_and_unit_confidence(tmp_path, case, expect, why):
    """Goodfellow et al.'s reading: the shallow RBF more accurate under PGD, less accurate clean
    (harder to train) and with low unit outputs on the examples that fool it; each failing part
    makes the claim "not reproduced" and says which."""
    c = claim("rbf")
    spec = parse_spec(c.spec(TINY))
    n = 200
    clean = {"linear": 190, "rbf0": 150, "mlp": 190, "rbfovr": 185}
    robust = {"linear": 20, "rbf0": 20 if case == "not robust" else 90, "mlp": 30, "rbfovr": 25}

    def outcomes(cell, eps):
        if cell.kind != "robust":
            return None
        m = cell.config["model"]["name"]
        correct = np.arange(n) < clean[m]
        # success on correct points so that robust accuracy = robust[m] / n
        success = correct & (np.arange(n) >= robust[m])
        return correct, success

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, outcomes)
        with store.transaction() as db:
            for cell in spec.cells:
                if cell.kind != "study":
                    continue
                m = cell.config["model"]["name"]
                correct = np.arange(n) < clean[m]
                fooled = correct & (np.arange(n) >= robust[m])
                soft = np.full(n, 0.9)
                _study_rows(db, cell, "clean", correct, ~correct, soft)
                _study_rows(db, cell, "FGSM", correct, fooled, soft)
                _study_rows(db, cell, "noise", np.zeros(n, bool), np.zeros(n, bool), soft)
                if m.startswith("rbf"):
                    u_clean = np.full(n, 0.6)
                    u_adv = np.full(n, 0.7 if case == "confident" else 0.012)
                    _study_rows(db, cell, "clean unit", correct, ~correct, u_clean)
                    _study_rows(db, cell, "FGSM unit", correct, fooled, u_adv)
                    _study_rows(db, cell, "noise unit", np.zeros(n, bool), np.zeros(n, bool), np.full(n, 1e-3))
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == expect, f.summary
    assert why in f.summary
    assert "clean 75.0% vs 95.0%" in f.summary  # the shallow pair's clean accuracy, from the store
    if case == "holds":
        assert "units 1.2% on fooling FGSM examples vs 60.0% clean" in f.summary
    rbf_row = [r for r in f.table if r["model"].startswith("RBF network (shallow")][0]
    assert rbf_row["PGD-20"] == _pct(robust["rbf0"] / n)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


@pytest.mark.parametrize("joint, expect", [(0.3, REPRODUCED), (math.inf, NOT_REPRODUCED)])
def test_claim_16_theorem_3_below_its_bound_is_not_reproduced(tmp_path, joint, expect):
    """Theorem 3's bound 1 − √(π/2)e^{−(η/L)²/2} − 2δ is a lower bound on the joint-fooling rate:
    a store whose pairs are never fooled together (no joint perturbation found), with δ = 0 and
    L = 1, contradicts it at every radius where the bound is positive."""
    c = claim("bounds")
    spec = parse_spec(c.spec(TINY))
    cell = [x for x in spec.cells if x.kind == "study"][0]
    names = [r["name"] for r in cell.config["models"]]
    n = 50
    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, lambda cc, e: None)
        with store.transaction() as db:
            metrics = [("bounds", "lipschitz", 1.0), ("bounds", "median_bound_r_in", 1.355)]
            metrics += [(m, "classwise_bound_r_in", 1.4) for m in names]
            for a, b in cell.config["transfer_pairs"]:
                metrics += [(f"joint {a} & {b}", "delta", 0.0), (f"joint {a} & {b}", "f_transfers", 0.5),
                            (f"joint {a} & {b}", "delta_samples", 1000)]
                v = np.full(n, joint)
                _study_rows(db, cell, f"joint {a} & {b}", np.ones(n, bool), np.isfinite(v), np.where(np.isfinite(v), v, np.nan))
            for attack, name, value in metrics:
                db.execute("INSERT OR REPLACE INTO metrics VALUES (?, ?, NULL, ?, ?)", (cell.hash, attack, name, value))
            for m in names:
                for q, v in (("latent", 0.2), ("r_in", 0.5), ("r_unc", 0.1)):
                    _study_rows(db, cell, f"{q} {m}", np.ones(n, bool), np.ones(n, bool), np.full(n, v))
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == expect, f.summary
    pairs = len(cell.config["transfer_pairs"])
    assert f"Theorem 3: {pairs if expect == REPRODUCED else 0} of {pairs} pairs never significantly below" in f.summary
    thm3 = [line for line in f.ours if line.startswith("Theorem 3")][0]
    assert all(f"{a} & {b}: δ = 0.000" in thm3 for a, b in cell.config["transfer_pairs"])
    if expect == REPRODUCED:
        assert "never significantly below it" in thm3 and "measured ≥ the bound at 40 of 40 radii" in thm3
    else:
        assert "significantly below it at η = " in thm3
    assert any(p.name == "claim16_theorem3.png" and p.is_file() for _, p in f.figures)


def test_the_confidence_study_stores_softmax_and_unit_outputs_per_point(tmp_path):
    """Claim 19's study on digits: per point the softmax confidence for every model and the RBF
    units (exp(logit)) only for a model that has them; FGSM's fooled points are clean-correct ones;
    the noise rows are as many as the test points."""
    from advlab.runs.grid import run_spec
    from advlab.reproduce.claims import _labelled

    spec = parse_spec("""
[data.d]
name = "digits"
n = 30
[models.lin]
zoo = "mlp"
hidden = []
data = "digits"
epochs = 2
[models.rbf]
zoo = "rbf"
hidden = []
recipe = "ovr"
data = "digits"
epochs = 2
lr = 0.01
[[measure]]
kind = "study"
study = "confidence"
models = ["lin", "rbf"]
data = "d"
eps = [0.1]
""")
    with Store(tmp_path / "c.db") as store:
        assert run_spec(spec, store, progress=False, threads=1).status == "done"
        ev = Evidence(store, spec.cells)
        cells = {c.config["model"]["name"]: c for c in spec.cells if c.kind == "study"}
        for name, cell in cells.items():
            correct, wrong, soft = _labelled(ev, cell, "clean", 0.0)
            _, fooled, soft_adv = _labelled(ev, cell, "FGSM", 0.1)
            noise_correct, _, soft_noise = _labelled(ev, cell, "noise", 0.0)
            assert correct.size == 30 and (wrong == ~correct).all() and not (fooled & ~correct).any()
            assert ((soft > 0.1) & (soft <= 1)).all() and soft_noise.size == 30 and not noise_correct.any()
            if name == "rbf":
                _, _, units = _labelled(ev, cell, "clean unit", 0.0)
                assert ((units >= 0) & (units <= 1)).all() and (units <= soft + 1e-9).any()
                assert ev.metric(cell, "mean_unit_where_wrong", 0.1, "FGSM") >= 0
            else:
                with pytest.raises(Exception, match="no clean unit outcomes"):
                    _labelled(ev, cell, "clean unit", 0.0)
        # the RBF trained with the one-vs-rest recipe, its card says so
        rbf_train = [c for c in spec.cells if c.kind == "train" and c.label == "rbf"][0]
        assert rbf_train.config["recipe"]["name"] == "ovr" and rbf_train.config["options"] == {"hidden": []}


# --- replicates are not independent units (a --full finding) -------------------------------------

def test_replicates_of_a_point_are_one_unit_so_duplicate_seeds_do_not_shrink_the_p_value():
    """--full ran FGSM, I-FGSM and MI-FGSM under seeds 0, 1, 2: three identical copies of every
    outcome, concatenated into the sign test, cut its p-value as if the test set were 3x larger.
    Per point, replicates are averaged first: three copies give exactly one copy's test."""
    from advlab.reproduce.claims import per_point

    n = 200
    counted = np.ones(n, bool)
    a, b = _rate(n, 60, seed=1), _rate(n, 45, seed=2)
    one = compare(per_point([(counted, a)]), per_point([(counted, b)]))
    three = compare(per_point([(counted, a)] * 3), per_point([(counted, b)] * 3))
    concatenated = compare(np.concatenate([a] * 3), np.concatenate([b] * 3))  # what --full did
    assert (three.a_only, three.b_only, three.p) == (one.a_only, one.b_only, one.p)
    assert three.a == pytest.approx(one.a) and three.b == pytest.approx(one.b)
    assert concatenated.p < one.p / 4      # the inflation the averaging removes
    # a point enters only the replicates that count it (a target that misclassifies it clean)
    m1, m2 = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)
    got = per_point([(m1, np.array([1, 0, 1, 1], bool)), (m2, np.array([0, 1, 1, 1], bool))])
    assert got.tolist() == [0.5, 0.0, 1.0]          # point 3 counted nowhere: left out


def test_compare_on_per_point_rates_is_the_sign_test_of_the_differences():
    a = np.array([1.0, 2 / 3, 1 / 3, 0.0, 0.5])
    b = np.array([0.0, 2 / 3, 2 / 3, 0.0, 0.0])
    t = compare(a, b)
    assert (t.a_only, t.b_only, t.n) == (2, 1, 5)       # ties (0 vs 0, 2/3 vs 2/3) dropped
    assert t.p == pytest.approx(sign_test(2, 1))
    assert t.a == pytest.approx(a.mean()) and t.b == pytest.approx(b.mean())
    with pytest.raises(ValueError, match="finite"):
        compare(np.array([np.nan]), np.array([0.0]))


def test_full_runs_the_deterministic_attacks_once_and_the_randomised_ones_per_seed():
    from advlab.reproduce.claims import FULL

    for key in ("1", "2", "3", "4", "6", "8"):
        seeds = {cell.config["seed"] for cell in parse_spec(claim(key).spec(FULL)).cells if cell.kind != "train"}
        assert seeds == {0}, key
    for key in ("9", "10", "18"):   # PGD's random start; VAT's trainings
        seeds = {cell.config["seed"] for cell in parse_spec(claim(key).spec(FULL)).cells if cell.kind != "train"}
        assert seeds == set(FULL.seeds), key
    # claim 9's FGSM cells ran under all three seeds, and the judge read seed 0 alone
    by_attack: dict[str, set[int]] = {}
    for cell in parse_spec(claim("9").spec(FULL)).cells:
        if cell.kind == "robust":
            by_attack.setdefault(cell.config["attack"]["name"], set()).add(cell.config["seed"])
    assert by_attack == {"fgsm": {0}, "pgd": set(FULL.seeds)}
    assert "deterministic and run once" in FULL.describe()


def test_claim_10_pools_its_seeds_per_point(tmp_path):
    """Three PGD seeds on one model: the verdict's units are the points (rates over the seeds)."""
    import dataclasses

    s = dataclasses.replace(TINY, seeds=(0, 1, 2))
    c = claim("10")
    spec = parse_spec(c.spec(s))
    n = 120

    def outcomes(cell, e):
        distilled = cell.config["model"]["name"] == "cnndistill"
        cw = cell.config["attack"].get("loss") == "cw"
        k = (90 if cw else 10) if distilled else 80
        return np.ones(n, bool), _rate(n, k, seed=cell.config["seed"] + (7 if cw else 0))

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, outcomes)
        f = c.judge(Evidence(store, spec.cells), s, tmp_path)
    assert f.verdict == REPRODUCED, f.summary
    assert "(n = 120;" in " ".join(f.ours)          # points, not 3 x 120 replicates


def test_claim_9_pools_pgd_over_its_seeds_per_point(tmp_path):
    """Claim 9 read only the first PGD cell of a model (seed 0 of three). Its PGD-10 column is
    now a point's robust correctness averaged over the seeds: on 100 points, seed 0 alone gives
    the FGSM-mix model 50% and the mean over three seeds 40%."""
    import dataclasses

    s = dataclasses.replace(TINY, seeds=(0, 1, 2))
    c = claim("9")
    spec = parse_spec(c.spec(s))
    n = 100
    broken_by_seed = {0: 50, 1: 70, 2: 60}   # PGD breaks 50 / 70 / 60 of the FGSM-mix model's points

    def outcomes(cell, e):
        name, attack = cell.config["model"]["name"], cell.config["attack"]["name"]
        if attack == "fgsm":
            return np.ones(n, bool), _rate(n, 90 if name == "cnnbase" else 20, seed=1)
        k = 100 if name == "cnnbase" else broken_by_seed[cell.config["seed"]]
        return np.ones(n, bool), np.arange(n) < k

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, outcomes)
        f = c.judge(Evidence(store, spec.cells), s, tmp_path)
    mix = next(r for r in f.table if r["model"].startswith("FGSM-mix"))
    assert mix["PGD-10"] == "40.0%"          # (50 + 30 + 40) / 300, not seed 0's 50.0%
    assert mix["FGSM"] == "80.0%"
    pgd_line = next(t for t in f.ours if t.startswith("FGSM-mix") and "PGD-10" in t)
    assert "(n = 100;" in pgd_line           # the points, not 3 x 100 replicates


def test_claim_5_counts_a_point_once_across_its_models(tmp_path):
    """The cosine claim pooled its four models by concatenation: 10 vs 3 points, seen by four
    models, became 40 vs 12 (p = 1.3e-4). A point is one unit: its cosines are averaged over the
    models first, so the test is 10 vs 3 (p = 0.09) and the claim is not reproduced."""
    c = claim("5")
    spec = parse_spec(c.spec(TINY))
    studies = [cell for cell in spec.cells if cell.kind == "study"]
    assert len(studies) == 4
    n = 40
    i_cos = np.full(n, 0.5)
    mi_cos = i_cos.copy()
    mi_cos[:10] = 0.9          # MI-FGSM higher on 10 points ...
    mi_cos[10:13] = 0.2        # ... lower on 3, equal on the rest, in every model
    mi_cos[-2:] = np.nan       # and two points no model measured
    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, lambda cell, e: None)
        with store.transaction() as db:
            for cell in studies:
                for label, cos in (("I-FGSM", i_cos), ("MI-FGSM", mi_cos)):
                    for p in range(n):
                        db.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, 1, 1, ?, NULL)",
                                   (cell.hash, label, TINY.eps, p, None if np.isnan(cos[p]) else float(cos[p])))
        f = c.judge(Evidence(store, spec.cells), TINY, tmp_path)
    assert f.verdict == NOT_REPRODUCED, f.summary
    assert "higher on 10 of 38 points" in f.summary
    assert compare(np.tile(mi_cos[:38], 4), np.tile(i_cos[:38], 4)).p < 1e-3   # what concatenating claimed
    assert compare(mi_cos[:38], i_cos[:38]).p == pytest.approx(sign_test(10, 3))


def test_claim_15_interval_counts_the_points_once_over_its_seeds(tmp_path):
    """--full summed LR → tree counts over its three seeds' cells (17,007 of 22,341 on a
    10,000-point test set) and put Wilson's interval on that sum. The units are the points: the
    interval is that of one seed's worth (the mean counts), three times as wide in variance."""
    import dataclasses

    s = dataclasses.replace(TINY, seeds=(0, 1, 2))
    c = claim("15")
    spec = parse_spec(c.spec(s))
    cells = [cell for cell in spec.cells if cell.kind == "techniques"]
    assert len(cells) == 3

    def metrics(cell, e):
        rows = []
        for src in cell.config["learners"]:
            for tgt in cell.config["learners"]:
                rows += [{"attack": technique_label(src, tgt), "name": "transferred", "value": 30.0},
                         {"attack": technique_label(src, tgt), "name": "target_correct", "value": 50.0}]
        return rows

    with Store(tmp_path / "s.db") as store:
        _fill(store, spec.cells, metrics)
        f = c.judge(Evidence(store, spec.cells), s, tmp_path)
    text = " ".join(f.ours)
    lo, hi = wilson(30, 50)
    assert f"(90/150 over 3 seed(s)), Wilson 95% [{100 * lo:.1f}%, {100 * hi:.1f}%] on 50 points" in text
    assert wilson(90, 150)[0] > 0.5 >= lo          # the summed counts would have called it
    assert f.verdict == NOT_REPRODUCED
