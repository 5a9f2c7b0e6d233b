"""#12: ``advlab report --store``: one static page from stored rows only. Headless Chromium opens
it, every figure must have loaded, and the numbers on the page must equal the store's."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from advlab.cli import main
from advlab.runs.results import leaderboard, robust_rows, worst_case
from advlab.runs.store import Store


class _Cells(HTMLParser):
    """``{table id: [[(data-key, data-value or text), ...] per row]}`` and the page's images."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: tuple[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell, self._text = (a.get("data-key"), a.get("data-value")), ""
        elif tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            key, value = self._cell
            self.tables[self._table][-1].append((key, value if value is not None else self._text))
            self._cell = None
        elif tag == "table":
            self._table = None


def _page(html_text: str) -> _Cells:
    p = _Cells()
    p.feed(html_text)
    return p


@pytest.fixture(scope="module")
def report(finished, tmp_path_factory):
    _, db = finished
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--store", str(db), "--out", str(out)]) == 0
    return db, out


def _stored(table, rows, keys):
    got = [[v for k, v in r if k in keys] for r in table if r]
    want = [[repr(r[k]) for k in keys] for r in rows]
    return got, want


def test_the_page_shows_the_stores_numbers(report):
    db, out = report
    page = _page((out / "index.html").read_text())
    with Store(db) as store:
        board, per_attack, worst = leaderboard(store), robust_rows(store), worst_case(store)
    keys = ["rank", "eps", "clean_accuracy", "robust_accuracy", "n", "n_correct", "n_robust"]
    got, want = _stored(page.tables["leaderboard"], board, keys)
    assert got == want and len(got) == 4        # 2 models x 2 eps
    keys = ["eps", "n", "n_correct", "n_robust", "robust_accuracy"]
    got, want = _stored(page.tables["robust"], per_attack, keys)
    assert got == want and len(got) == 8        # 2 models x 2 attacks x 2 eps
    got, want = _stored(page.tables["worst"], worst, keys)
    assert got == want
    assert "runs" in page.tables and page.tables["runs"][1]   # provenance: the run is there


def test_every_figure_is_a_file_beside_the_page(report):
    _, out = report
    page = _page((out / "index.html").read_text())
    assert len(page.images) >= 4          # worst case, two per-model curves, DeepFool's distances
    for src in page.images:
        assert "/" not in src and (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    text = (out / "index.html").read_text()
    assert "http://" not in text and "https://" not in text       # no CDN, no network


def test_galleries_come_from_the_cells_stored_examples(report):
    """Each robust (model, attack) has a gallery drawn from its cell's examples file (safetensors),
    whose adversarial inputs lie inside the cell's threat model and whose stored classes agree
    with the stored outcomes."""
    import torch
    from safetensors.torch import load_file

    db, out = report
    page = _page((out / "index.html").read_text())
    galleries = [src for src in page.images if src.startswith("gallery_")]
    assert len(galleries) == 4, page.images          # 2 models x (FGSM, PGD)
    with Store(db) as store:
        cells = store.query("SELECT hash, config FROM cells WHERE kind = 'robust' AND status = 'done'")
        for c in cells:
            t = load_file(str(store.files / c["hash"] / "examples.safetensors"))
            for e in json.loads(c["config"])["eps"]:
                x, x_adv, pts = t[f"x@{e:g}"], t[f"x_adv@{e:g}"], t[f"points@{e:g}"]
                n_correct = store.query("SELECT count(*) AS n FROM outcomes WHERE cell = ? AND eps = ? AND "
                                        "clean_correct = 1", (c["hash"], e))[0]["n"]
                assert x.shape[0] == x_adv.shape[0] == pts.shape[0] == min(8, n_correct) > 0
                assert float((x_adv - x).abs().amax()) <= e + 1e-6
                assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
                fooled = (t[f"adv_pred@{e:g}"] != t[f"y@{e:g}"]).tolist()
                stored = {r["point"]: bool(r["success"]) for r in store.query(
                    "SELECT point, success FROM outcomes WHERE cell = ? AND eps = ?", (c["hash"], e))}
                assert [stored[int(p)] for p in pts] == fooled
                assert torch.equal(t[f"clean_pred@{e:g}"], t[f"y@{e:g}"])   # attacked points were correct


def test_a_corrupt_examples_file_is_a_note_not_a_crash(finished, tmp_path):
    import shutil as sh

    _, db = finished
    copy = tmp_path / "runs.db"
    sh.copy(db, copy)
    sh.copytree(str(db) + ".files", str(copy) + ".files")
    with Store(copy) as store:
        h = store.query("SELECT hash FROM cells WHERE kind = 'robust' AND status = 'done' ORDER BY model_name, "
                        "updated")[0]["hash"]
    (tmp_path / "runs.db.files" / h / "examples.safetensors").write_bytes(b"\x00" * 40)
    assert main(["report", "--store", str(copy), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "index.html").read_text()
    assert f"cell {h}: its examples file could not be read" in text


HARNESS = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="f" src="index.html" style="width:1200px;height:800px"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var doc = this.contentDocument, imgs = Array.from(doc.images);
  var cells = Array.from(doc.querySelectorAll("#leaderboard td[data-value]")).map(function (td) {
    return [td.getAttribute("data-key"), td.getAttribute("data-value"), td.textContent]; });
  document.getElementById("result").textContent = JSON.stringify({
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    cells: cells});
});
</script></body></html>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_headless_chromium_loads_every_figure_and_shows_the_stored_numbers(report):
    browser = _chromium()
    if browser is None:
        import os

        if os.environ.get("ADVLAB_REQUIRE_PEERS"):
            pytest.fail("chromium is not installed (apt-get install chromium); the report test needs it")
        pytest.skip("no chromium on this machine")
    db, out = report
    harness = out / "check.html"
    harness.write_text(HARNESS)
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
              "--virtual-time-budget=10000"]
    dom = subprocess.run([*common, "--dump-dom", harness.as_uri()], capture_output=True, text=True, timeout=120)
    raw = dom.stdout.split('<pre id="result">')[1].split("</pre>")[0]
    result = json.loads(raw.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert result["images"] >= 4 and result["loaded"] == result["images"], result
    with Store(db) as store:
        board = leaderboard(store)
    shown = {(k, v) for k, v, _ in result["cells"]}
    for r in board:
        for k in ("robust_accuracy", "clean_accuracy", "n_robust"):
            assert (k, repr(r[k])) in shown
    for k, v, text in result["cells"]:       # what a reader sees agrees with the stored value
        if k in ("robust_accuracy", "clean_accuracy"):
            assert text == f"{100 * float(v):.1f}"
    shot = out / "screenshot.png"
    subprocess.run([*common, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
                    (out / "index.html").as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    harness.unlink()
