"""A self-contained HTML report (``index.html``): table, figures, notes, provenance.

No JavaScript and no external assets: inline CSS, figures referenced as PNG files next to the
page by relative path. Every number is formatted from the stored ``EvalRow`` fields and every
piece of text goes through :func:`html.escape`.

>>> accuracy_curve(ev, path="report/robust_accuracy.png")
>>> write_report("report", evaluation=ev, figures=["report/robust_accuracy.png"],
...              title="SmallCNN on digits", notes="PGD with 40 steps.")
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from advlab._io import atomic_write_text
from advlab.evaluation.robustness import WORST_CASE, denominators

PathLike = str | os.PathLike[str]

# Shown first in the provenance section, in this order; the rest follow as stored.
KEY_PROVENANCE = ("advlab", "torch", "code_revision", "seed")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       margin: 0; background: #fafafa; line-height: 1.45; }
main { max-width: 980px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
p.denominators { color: #444; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 9px; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.config { font-family: monospace; font-size: 0.85em; max-width: 360px; overflow-wrap: break-word; }
span.count { color: #777; font-size: 0.85em; }
tr.worst td { font-weight: bold; }
figure { margin: 16px 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.provenance dt { font-weight: bold; }
dl.provenance dd { margin: 0; font-family: monospace; overflow-wrap: anywhere; }
dl.provenance ul { margin: 0; padding-left: 1.2em; }
div.wide { overflow-x: auto; }
.notes p { margin: 0.4em 0; }
"""


#: captions of the figures advlab's commands write, by file stem (a page shows words, not file names)
CAPTIONS = {
    "accuracy_vs_eps": "Robust accuracy against ε: one line per attack, the worst case per point dashed, "
                       "clean accuracy dotted.",
    "gallery": "Adversarial examples: the clean input with its predicted class (confidence), the "
               "perturbation (amplified to be visible) and the adversarial input; red: the class changed.",
    "gallery_fgsm": "The same for FGSM, a single step.",
    "signal_gallery": "Adversarial signals: each channel's clean curve (solid) and adversarial curve (dashed) in "
                      "original units, with the true, clean and adversarial classes (confidence); red: the "
                      "class changed.",
    "minimal_norms": "Smallest perturbation found per point, and the robust accuracy it implies at every ε.",
    "decision_maps": "Decision-boundary cross-sections around test points (FGSM direction × a random "
                     "orthogonal direction).",
    "gaas": "Dimension of the gradient-aligned adversarial subspace at each L2 radius (Tramèr et al. "
            "2017).",
    "cosine": "Cosine similarity of successive I-FGSM and MI-FGSM updates.",
    "bounds_cdf": "Fawzi et al. (2018) robustness bounds against the perturbations attacks find.",
}


def figure_caption(stem: str) -> str:
    """The caption of a figure file without one: advlab's own wording, else its name in words."""
    if stem in CAPTIONS:
        return CAPTIONS[stem]
    gallery = re.fullmatch(r"gallery_(?P<attack>[a-z0-9-]+)_eps(?P<eps>[0-9.e+-]+)", stem)
    if gallery:  # the demo's and attack's per-attack galleries, gallery_<attack>_eps<ε>
        from advlab.attacks.registry import display_name

        try:
            name = display_name(gallery["attack"])
        except ValueError:
            name = gallery["attack"]
        return (f"Adversarial examples of {name} at ε = {gallery['eps']}: the clean input with its "
                "predicted class (confidence), the perturbation (amplified to be visible) and the "
                "adversarial input; red: the class changed.")
    words = stem.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def write_report(folder: PathLike, *, evaluation: Any,
                 figures: Sequence[PathLike] | Mapping[str, PathLike] = (),
                 title: str = "advlab robustness report",
                 notes: str | Sequence[str] = "",
                 sections: Mapping[str, str] | None = None) -> Path:
    """Write ``folder/index.html`` for ``evaluation`` and the given PNG figures.

    Args:
        folder: the report folder (created if needed).
        evaluation: an :class:`~advlab.evaluation.Evaluation`.
        figures: PNG files to embed, in order, as a list of paths (captioned with the file name)
            or a ``{caption: path}`` mapping. A relative path is looked up in ``folder`` first,
            then in the working directory. A figure outside ``folder`` is copied into it, so the
            page only ever refers to files beside it.
        title: the page title.
        notes: free text, a string (paragraphs separated by blank lines) or a list of paragraphs.
        sections: ``{heading: markdown}`` shown after the figures, e.g. the changed features of
            a table's adversarial rows (:func:`~advlab.reports.changed_features_table`); the
            Markdown read is that advlab writes: ``###`` headings, pipe tables, paragraphs.

    Returns:
        The path of ``index.html``.
    """
    out, embedded, parts = page_start(folder, figures, title=title, notes=notes)
    esc = html.escape
    parts += ["<h2>Robust accuracy</h2>", *_summary_table(evaluation)]
    if embedded:
        parts.append("<h2>Figures</h2>")
        for caption, rel in embedded:
            text = caption if caption is not None else figure_caption(rel.stem)
            parts.append(f'<figure><img src="{esc(quote(rel.as_posix()))}" alt="{esc(text)}">'
                         f"<figcaption>{esc(text)}</figcaption></figure>")
    for heading, text in (sections or {}).items():
        parts += [f"<h2>{esc(heading)}</h2>", '<div class="wide">', *markdown_html(text), "</div>"]
    parts += ["<h2>All rows</h2>", '<div class="wide">', *_rows_table(evaluation), "</div>"]
    parts += ["<h2>Provenance</h2>", *_provenance(getattr(evaluation, "provenance", {}) or {})]
    parts += ["</main>", "</body>", "</html>", ""]
    index = out / "index.html"
    atomic_write_text(index, "\n".join(parts))
    return index


def page_start(folder: PathLike, figures: Sequence[PathLike] | Mapping[str, PathLike], *, title: str,
               notes: str | Sequence[str]) -> tuple[Path, list[tuple[str | None, Path]], list[str]]:
    """What every advlab page opens with: the folder (created), the figures placed beside the page
    as ``(caption, relative path)``, and the HTML so far (head, title, notes)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    items = list(figures.items()) if isinstance(figures, Mapping) else [(None, f) for f in figures]
    taken: dict[str, Path] = {}
    embedded = [(caption, _place(Path(p), out, taken)) for caption, p in items]
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{esc(title)}</h1>"]
    paragraphs = _paragraphs(notes)
    if paragraphs:
        parts += ["<h2>Notes</h2>", '<div class="notes">', *[f"<p>{esc(p)}</p>" for p in paragraphs], "</div>"]
    return out, embedded, parts


def _place(path: Path, folder: Path, taken: dict[str, Path]) -> Path:
    """The figure's path relative to ``folder``, copying it there when it lives elsewhere.

    ``taken`` maps the names already used in this report to their sources, so two different
    figures with the same file name do not overwrite each other; an older copy from a previous
    report under the same name is replaced.
    """
    if not path.is_absolute() and (folder / path).is_file():
        path = folder / path
    if not path.is_file():
        raise FileNotFoundError(f"figure {path} does not exist (write it before the report)")
    src = path.resolve()
    root = folder.resolve()
    if src.is_relative_to(root):
        rel = src.relative_to(root)
        taken[rel.as_posix()] = src
        return rel
    name, k = src.name, 1
    while name in taken and taken[name] != src:
        name = f"{src.stem}-{k}{src.suffix}"
        k += 1
    taken[name] = src
    dest = root / name
    if dest.resolve() != src:
        shutil.copyfile(src, dest)
    return Path(name)


def markdown_html(text: str) -> list[str]:
    """HTML lines for the Markdown advlab's reports write: ``#``..``######`` headings (shown one
    level below the page's sections), pipe tables (``---:`` right-aligns a column) and paragraphs.
    Everything is escaped; no other Markdown is interpreted."""
    esc = html.escape
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        head = re.fullmatch(r"(#{1,6})\s+(.*)", line)
        if head:
            level = max(3, len(head[1]))  # under the page's <h2> sections
            out.append(f"<h{level}>{esc(head[2])}</h{level}>")
            i += 1
            continue
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            rule = len(block) > 1 and all(re.fullmatch(r":?-+:?", c) for c in block[1])
            right = [c.endswith(":") for c in block[1]] if rule else []
            body = block[2:] if rule else block[1:]
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{esc(c)}</th>" for c in block[0]) + "</tr>")
            for row in body:
                out.append("<tr>" + "".join(
                    f'<td class="num">{esc(c)}</td>' if k < len(right) and right[k] else f"<td>{esc(c)}</td>"
                    for k, c in enumerate(row)) + "</tr>")
            out.append("</table>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(("|", "#")):
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{esc(' '.join(para))}</p>")
    return out


def _paragraphs(notes: str | Sequence[str]) -> list[str]:
    if isinstance(notes, str):
        chunks = notes.replace("\r\n", "\n").split("\n\n")
    else:
        chunks = [str(n) for n in notes]
    return [" ".join(c.split()) for c in chunks if c.strip()]


def _pct(fraction: float) -> str:
    return "–" if not math.isfinite(fraction) else f"{100 * fraction:.1f}"


def _num(value: float, fmt: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, fmt)


def _summary_table(evaluation: Any) -> list[str]:
    rows = list(evaluation.rows)
    if not rows:
        return ["<p>(no rows)</p>"]
    esc = html.escape
    out = [f'<p class="denominators">Robust accuracy (%) {esc(denominators(rows))} '
           "Each cell: robust accuracy, then robust points / n.</p>",
           "<table>", "<thead><tr><th>attack</th>"
           + "".join(f"<th>ε = {e:g}</th>" for e in evaluation.eps) + "</tr></thead>", "<tbody>"]
    for name in evaluation.attacks:
        cells = []
        for e in evaluation.eps:
            row = next((r for r in rows if r.attack == name and math.isclose(
                r.eps, e, rel_tol=1e-9, abs_tol=1e-12)), None)
            if row is None:
                cells.append('<td class="num">–</td>')
            else:
                cells.append(f'<td class="num">{_pct(row.robust_accuracy)} '
                             f'<span class="count">({row.n_robust}/{row.n})</span></td>')
        cls = ' class="worst"' if name == WORST_CASE else ""
        out.append(f"<tr{cls}><td>{esc(name)}</td>{''.join(cells)}</tr>")
    out += ["</tbody>", "</table>"]
    return out


def _rows_table(evaluation: Any) -> list[str]:
    esc = html.escape
    head = ["attack", "ε", "norm", "n", "n correct", "n robust", "clean acc. (%)", "robust acc. (%)",
            "success rate (% of n correct)", "median ‖δ‖", "mean ‖δ‖", "grads", "seconds", "config"]
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for r in evaluation.rows:
        nums = [f"{r.eps:g}", None, str(r.n), str(r.n_correct), str(r.n_robust), _pct(r.clean_accuracy),
                _pct(r.robust_accuracy), _pct(r.success_rate), _num(r.median_norm, ".4g"),
                _num(r.mean_norm, ".4g"), str(r.grads), _num(r.seconds, ".2f")]
        cells = [f"<td>{esc(r.attack)}</td>"]
        for v in nums:
            cells.append(f"<td>{esc(r.norm)}</td>" if v is None else f'<td class="num">{esc(v)}</td>')
        # line breaks only between arguments (at the <wbr> after each comma), never inside a word
        cells.append(f'<td class="config">{esc(r.config).replace(", ", ",<wbr> ")}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return out


def _provenance(prov: Mapping[str, Any]) -> list[str]:
    esc = html.escape
    keys = list(KEY_PROVENANCE) + [k for k in prov if k not in KEY_PROVENANCE]
    out = ['<dl class="provenance">']
    for k in keys:
        value = prov.get(k, None)
        out.append(f"<dt>{esc(str(k))}</dt><dd>{_value(value) if k in prov else '<em>not recorded</em>'}</dd>")
    out.append("</dl>")
    return out


def _value(value: Any) -> str:
    esc = html.escape
    if isinstance(value, Mapping):
        items = "".join(f"<li>{esc(str(k))}: {_value(v)}</li>" for k, v in value.items())
        return f"<ul>{items}</ul>"
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value))
    return esc(str(value))
