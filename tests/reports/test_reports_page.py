"""write_report: a self-contained index.html with the table, figures, escaped notes, provenance."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import N, N_CORRECT

from advlab.evaluation import Evaluation
from advlab.reports import accuracy_curve, write_report


class _Tables(HTMLParser):
    """Collects the text of every <td>/<th> cell, per table, and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    p.close()
    return p


@pytest.fixture()
def report(tmp_path, evaluation):
    curve = tmp_path / "elsewhere" / "curve.png"
    accuracy_curve(evaluation, path=curve)
    index = write_report(tmp_path / "report", evaluation=evaluation, figures=[curve],
                         title="CNN <b>bold</b> & co",
                         notes="Attack budget was <script>alert('x')</script>.\n\nSecond paragraph.")
    return index, index.read_text(encoding="utf-8")


def test_summary_table_has_the_stored_numbers_and_denominators(report, evaluation):
    index, text = report
    assert index.name == "index.html"
    summary = _parse(text).tables[0]
    assert summary[0] == ["attack", "ε = 0", "ε = 0.05", "ε = 0.1"]
    body = {row[0]: row[1:] for row in summary[1:]}
    assert list(body) == evaluation.attacks
    for r in evaluation.rows:
        j = evaluation.eps.index(r.eps)
        assert body[r.attack][j] == f"{100 * r.robust_accuracy:.1f} ({r.n_robust}/{r.n})"
    assert body["PGD"] == ["90.0 (180/200)", "64.0 (128/200)", "16.5 (33/200)"]
    assert f"over n = {N} points" in text and f"({N_CORRECT}/{N})" in text
    assert f"attacks run on the {N_CORRECT} correctly classified points" in text


def test_all_rows_table_has_every_row(report, evaluation):
    rows = _parse(report[1]).tables[1]
    assert len(rows) == 1 + len(evaluation.rows)
    head = rows[0]
    for cells, r in zip(rows[1:], evaluation.rows):
        got = dict(zip(head, cells))
        assert got["attack"] == r.attack and got["n robust"] == str(r.n_robust)
        assert got["success rate (% of n correct)"] == f"{100 * r.success_rate:.1f}"
        assert got["config"] == r.config
        assert got["median ‖δ‖"] == ("–" if r.median_norm != r.median_norm else f"{r.median_norm:.4g}")


def test_text_is_escaped_and_there_is_no_script(report):
    _, text = report
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<b>" not in text and "CNN &lt;b&gt;bold&lt;/b&gt; &amp; co" in text
    tags = set(_parse(text).tags)
    assert "script" not in tags and "b" not in tags
    assert "<p>Second paragraph.</p>" in text


def test_provenance_is_shown(report, evaluation):
    _, text = report
    for key in ("advlab", "torch", "code_revision", "seed"):
        value = html.escape(str(evaluation.provenance[key]))
        assert f"<dt>{key}</dt><dd>{value}</dd>" in text
    assert "PGD(eps=0.0, steps=10)" in text


def test_missing_provenance_is_said(tmp_path, evaluation):
    text = write_report(tmp_path, evaluation=Evaluation(rows=evaluation.rows, provenance={"torch": "2.x"}),
                        ).read_text(encoding="utf-8")
    assert "<dt>code_revision</dt><dd><em>not recorded</em></dd>" in text
    assert "<dt>torch</dt><dd>2.x</dd>" in text


def test_outside_figure_is_copied_and_referenced_relatively(report, tmp_path):
    index, text = report
    copied = index.parent / "curve.png"
    assert copied.read_bytes() == (tmp_path / "elsewhere" / "curve.png").read_bytes()
    assert '<img src="curve.png" alt="Curve">' in text   # a file without a known caption: its name in words
    assert str(tmp_path) not in text  # no absolute paths: the folder can be moved


def test_figures_inside_the_folder_keep_their_place_and_captions(tmp_path, evaluation):
    folder = tmp_path / "rep"
    accuracy_curve(evaluation, path=folder / "figs" / "a b.png")
    accuracy_curve(evaluation, path=folder / "c.png")
    index = write_report(folder, evaluation=evaluation,
                         figures={"Curve <1>": folder / "figs" / "a b.png", "Second": "c.png"})
    text = index.read_text(encoding="utf-8")
    assert '<img src="figs/a%20b.png" alt="Curve &lt;1&gt;"><figcaption>Curve &lt;1&gt;</figcaption>' in text
    assert '<img src="c.png" alt="Second">' in text
    assert sorted(p.name for p in folder.rglob("*.png")) == ["a b.png", "c.png"]  # nothing copied


def test_same_name_figures_from_different_places_do_not_collide(tmp_path, evaluation):
    a, b = tmp_path / "a" / "fig.png", tmp_path / "b" / "fig.png"
    accuracy_curve(evaluation, path=a)
    accuracy_curve(evaluation, path=b, title="other")
    text = write_report(tmp_path / "r", evaluation=evaluation, figures=[a, b]).read_text(encoding="utf-8")
    assert 'src="fig.png"' in text and 'src="fig-1.png"' in text
    assert (tmp_path / "r" / "fig-1.png").read_bytes() == b.read_bytes()


def test_missing_figure_is_refused(tmp_path, evaluation):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(tmp_path, evaluation=evaluation, figures=[Path("nope.png")])


def test_captions_are_words_and_configs_break_only_between_arguments(tmp_path, evaluation):
    """#11: HTML captions were file names ("accuracy_vs_eps") and the config column wrapped mid-word
    ("step_size=Non / e")."""
    folder = tmp_path / "rep"
    accuracy_curve(evaluation, path=folder / "accuracy_vs_eps.png")
    text = write_report(folder, evaluation=evaluation, figures=["accuracy_vs_eps.png"]).read_text()
    assert "<figcaption>Robust accuracy against ε" in text and ">accuracy_vs_eps<" not in text
    assert "overflow-wrap: anywhere; }" not in text.split("td.config")[1].split("\n")[0]
    configs = [c for c in text.split('<td class="config">')[1:]]
    assert configs and all(",<wbr> " in c.split("</td>")[0] or "," not in c.split("</td>")[0] for c in configs)


def test_a_per_attack_gallery_is_captioned_with_its_attack_and_eps():
    """Seen in the demo page's screenshot: the galleries were captioned "Gallery pgd eps0.1"."""
    from advlab.reports.page import figure_caption

    assert figure_caption("gallery_pgd_eps0.1").startswith("Adversarial examples of PGD at ε = 0.1: ")
    assert figure_caption("gallery_mifgsm_eps0.03").startswith("Adversarial examples of MI-FGSM at ε = 0.03")
    assert figure_caption("gallery_nosuch_eps1").startswith("Adversarial examples of nosuch at ε = 1")
