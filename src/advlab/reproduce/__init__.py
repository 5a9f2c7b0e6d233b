"""``advlab reproduce``: the seeds' claims run through the runs layer and judged from the store.

Each claim (:data:`~advlab.reproduce.claims.CLAIMS`) is a spec (its models, measurements and ε,
sized by a :class:`~advlab.reproduce.claims.Setting`: ``quick``, ``full`` or ``tiny``), run by
:func:`advlab.runs.grid.run_spec` on one store, so a second call resumes where the first stopped
and models two claims share are trained once; then its judge reads the store's rows and gives a
verdict (reproduced / not reproduced / not run) with the numbers beside the paper's and a figure.
:func:`reproduce` writes everything as one static page.

Example:
    >>> from advlab.reproduce import reproduce
    >>> page = reproduce(["mifgsm-transfer", "panda"], mode="quick", store="runs.db", out="repro")
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from advlab.reproduce.claims import CLAIMS, NOT_REPRODUCED, NOT_RUN, REPRODUCED, SETTINGS, Claim, Evidence, Finding, \
    Setting, claim


@dataclass
class Outcome:
    """A claim, its finding, and the cells its spec ran (with their stored seconds)."""

    claim: Claim
    finding: Finding
    cells: int
    failed: int
    seconds: float


def reproduce(claims: Sequence[str] | None = None, *, mode: str | Setting = "quick", store: str | Path,
              out: str | Path, executor: str = "local", address: str | None = None, data_dir: str | None = None,
              device: str = "cpu", progress: bool = True, threads: int | None = None,
              say: Callable[[str], None] = print, run: bool = True, workers: int = 1,
              judge: bool = True) -> Path:
    """Run the ``claims`` (keys or numbers; all by default) at ``mode`` on ``store`` and write
    ``out/index.html``; return its path. Resumable: cells already done in the store are reused.
    ``run=False`` runs nothing: the claims are judged from the cells already done (a claim with
    cells missing is "not run"), e.g. to write one page over a long run made claim by claim.

    ``workers > 1`` (local executor) starts ``workers - 1`` more processes of the same command on
    the same store; the store's claims share the cells out (a cell runs once, a measurement waits
    for the model another process trains), each process runs ``threads`` torch threads (default
    the cores divided by ``workers``), and this one judges once all have finished. The quick run's
    small models keep only about 1.4 of 2 threads busy, so two one-thread workers use the cores
    better. ``judge=False`` runs the cells and writes nothing (what the extra workers do)."""
    from advlab.runs.grid import run_spec
    from advlab.runs.spec import Spec, parse_spec
    from advlab.runs.store import Store

    setting = SETTINGS[mode] if isinstance(mode, str) else mode
    if isinstance(mode, str) and mode not in SETTINGS:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(SETTINGS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number ≥ 1, got {workers!r}")
    if workers > 1 and (executor != "local" or not run or not isinstance(mode, str)):
        raise ValueError("workers > 1 needs the local executor, a run (not --no-run) and a named mode "
                         "(quick, full or tiny): on Ray the cluster shares the cells out itself")
    if workers > 1 and threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    chosen = [claim(k) for k in claims] if claims else list(CLAIMS.values())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    specs = {c.key: parse_spec(c.spec(setting)) for c in chosen}
    # One run over the union of the claims' cells (a cell two claims share runs once; on Ray, one
    # cluster for all of them): train cells first, then the measurements, each once, heaviest first.
    seen: dict[str, Any] = {}
    for spec in specs.values():
        for cell in spec.cells:
            seen.setdefault(cell.hash, cell)
    cells = schedule(list(seen.values()))
    merged = Spec(path=None, name=f"reproduce-{setting.mode}", cells=cells,
                  text="\n\n".join(f"# claim {c.number}: {c.key}\n" + c.spec(setting) for c in chosen))
    if not run and not Path(store).exists():
        raise FileNotFoundError(f"no store at {store}: there is nothing to judge without running (leave out --no-run)")
    with Store(store) as st:
        if judge:
            say(f"{len(chosen)} claim(s), {len(cells)} cells ({setting.describe()})"
                + (f"; {workers} worker processes, {threads} thread(s) each" if workers > 1 else ""))
        if run:
            helpers = _start_workers(workers - 1, chosen, mode=str(mode), store=store, out=out, data_dir=data_dir,
                                     device=device, threads=threads)
            try:
                failed = set(run_spec(merged, st, executor=executor, address=address, data_dir=data_dir,
                                      device=device, progress=progress, threads=threads).failed)
            except BaseException:  # interrupted or failed: stop the helpers rather than wait for them
                _stop_workers(helpers)
                raise
            bad = _finish_workers(helpers)
            for text in bad:
                say(text)
            if bad:  # a helper's cells are stored as failed, or left undone: the judges say "not run"
                failed |= {r["hash"] for r in st.query("SELECT hash FROM cells WHERE status = 'failed'")}
            if not judge:
                return out
        else:
            hashes = [c.hash for c in cells]
            done = {r["hash"] for r in st.query(f"SELECT hash FROM cells WHERE status = 'done' AND hash IN "
                                                f"({','.join('?' * len(hashes))})", hashes)} if hashes else set()
            failed = {r["hash"] for r in st.query(f"SELECT hash FROM cells WHERE status = 'failed' AND hash IN "
                                                  f"({','.join('?' * len(hashes))})", hashes)} if hashes else set()
            say(f"judging only (--no-run): {len(done)} of {len(cells)} cells done in the store")
        for c in chosen:
            spec = specs[c.key]
            finding = c.judge(Evidence(st, spec.cells), setting, out)
            hashes = [cell.hash for cell in spec.cells]
            rows = st.query(f"SELECT seconds FROM cells WHERE hash IN ({','.join('?' * len(hashes))})", hashes)
            seconds = sum(float(r["seconds"] or 0.0) for r in rows)
            outcomes.append(Outcome(c, finding, len(spec.cells), sum(h in failed for h in hashes), seconds))
            say(f"claim {c.number} ({c.key}): {finding.verdict}: {finding.summary}")
        page = write_page(outcomes, setting, out, store=st, wall=time.perf_counter() - t0)
    return page


# The heaviest measurements and training recipes of the quick run, heaviest first (one core's
# seconds, measured 2026-12-07 at the 20,000-image defended models: bounds 260, ensemble-training 94,
# targeted 72, patch 70, universal 59, techniques 58, detector 56, vat 39; PGD training 237,
# FGSM-mix 100, distillation 82, batch mix 51).
HEAVY_STUDIES = ("bounds", "ensemble-training", "targeted", "patch", "universal", "detector", "vat")
HEAVY_RECIPES = ("pgd", "fgsm-mix", "distill", "batch-mix")


def _weight(cell: Any) -> int:
    if cell.kind == "techniques":
        return len(HEAVY_STUDIES) - HEAVY_STUDIES.index("universal")
    study = cell.config.get("study") if cell.kind == "study" else None
    return len(HEAVY_STUDIES) - HEAVY_STUDIES.index(study) if study in HEAVY_STUDIES else 0


def schedule(cells: Sequence[Any]) -> list[Any]:
    """``cells`` in the order processes take them: model (train) cells first, those the heaviest
    measurement needs before the others (a PGD-trained model before plain ones), then the
    measurements heaviest first; otherwise as given. The order changes no result, only the wall
    time of several workers: with the claims' order the quick run's longest chain (the PGD-trained
    model, then the bounds study on it) started last and ran alone for minutes."""
    order = {c.hash: i for i, c in enumerate(cells)}
    need = {}
    for c in cells:
        for h in c.needs:
            need[h] = max(need.get(h, 0), _weight(c))

    def recipe(c: Any) -> int:
        r = c.config.get("recipe")
        r = r.get("name") if isinstance(r, dict) else r
        return len(HEAVY_RECIPES) - HEAVY_RECIPES.index(r) if r in HEAVY_RECIPES else 0

    train = sorted((c for c in cells if c.kind == "train"), key=lambda c: (-need.get(c.hash, 0), -recipe(c),
                                                                           order[c.hash]))
    rest = sorted((c for c in cells if c.kind != "train"), key=lambda c: (-_weight(c), order[c.hash]))
    return train + rest


def _start_workers(n: int, chosen: Sequence[Claim], *, mode: str, store: str | Path, out: Path,
                   data_dir: str | None, device: str, threads: int | None) -> list[tuple[subprocess.Popen, Path]]:
    """``n`` more processes of this run (``advlab reproduce ... --no-judge``), their output in
    ``out/workers/worker-K.log``."""
    if n <= 0:
        return []
    logs = out / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "advlab", "reproduce", *[c.key for c in chosen], f"--{mode}", "--store", str(store),
           "--out", str(out), "--device", device, "--no-progress", "--no-judge"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    procs = []
    for k in range(n):
        log = logs / f"worker-{k + 1}.log"
        with open(log, "w") as fh:
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), log))
    return procs


def _finish_workers(procs: Sequence[tuple[subprocess.Popen, Path]]) -> list[str]:
    """Wait for the helper processes (stopping them if this one is interrupted); a line per helper
    that failed."""
    bad = []
    try:
        for proc, log in procs:
            if proc.wait() != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                bad.append(f"worker process {proc.pid} exited with {proc.returncode} ({log}): "
                           + (tail[0] if tail else "no output"))
    finally:
        _stop_workers(procs)
    return bad


def _stop_workers(procs: Sequence[tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


CSS_EXTRA = """
.verdict { font-weight: 600; padding: 0 .4em; border-radius: 3px; }
.reproduced { background: #d8f0d8; }
.not-reproduced { background: #f6d5d5; }
.not-run { background: #eee; }
blockquote { border-left: 3px solid #bbb; margin: .5em 0; padding: .2em .8em; color: #333; }
"""


def _verdict(v: str, number: int) -> str:
    return (f'<span class="verdict {v.replace(" ", "-")}" data-claim="{number}" data-verdict="{html.escape(v)}">'
            f"{html.escape(v)}</span>")


def _table(rows: Sequence[dict[str, Any]], table_id: str) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    out = [f'<table id="{table_id}">', "<tr>" + "".join(f"<th>{html.escape(str(k))}</th>" for k in keys) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys) + "</tr>")
    return out + ["</table>"]


def write_page(outcomes: Sequence[Outcome], setting: Setting, out: Path, *, store: Any, wall: float) -> Path:
    """The report: a summary table of every claim, then a section per claim (the paper, ours,
    the verdict and its test, the figure)."""
    from advlab._io import atomic_write_text
    from advlab.reports.page import CSS

    esc = html.escape
    counts = {v: sum(o.finding.verdict == v for o in outcomes) for v in (REPRODUCED, NOT_REPRODUCED, NOT_RUN)}
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>advlab reproduce: the seeds' claims</title>", f"<style>{CSS}{CSS_EXTRA}</style>", "</head>",
             "<body>", "<main>", "<h1>The seeds' claims, reproduced</h1>",
             f"<p>{esc(setting.describe())}. {counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not "
             f"reproduced, {counts[NOT_RUN]} not run, of {len(outcomes)} claims. Every advlab number below is read "
             f"from the store ({esc(str(store.path))}); the page took {wall:.0f} s (cells already in the store "
             "are reused, not rerun).</p>",
             "<h2>Summary</h2>", "<table>",
             "<tr><th>#</th><th>claim</th><th>seed</th><th>verdict</th><th>what advlab measured</th>"
             "<th>cells</th><th>cell time*</th></tr>"]
    for o in outcomes:
        c = o.claim
        parts.append(f'<tr><td>{c.number}</td><td><a href="#claim-{c.number}">{esc(c.title)}</a></td>'
                     f"<td>{esc(c.seed)}</td><td>{_verdict(o.finding.verdict, c.number)}</td><td>{esc(o.finding.summary)}</td>"
                     f"<td class=\"num\">{o.cells}{f' ({o.failed} failed)' if o.failed else ''}</td>"
                     f'<td class="num">{o.seconds:.0f} s</td></tr>')
    parts.append("</table>")
    parts.append('<p class="note">* The stored seconds of the claim\'s cells when they ran; a model several claims '
                 "share counts in each of them.</p>")
    for o in outcomes:
        c, f = o.claim, o.finding
        parts += [f'<h2 id="claim-{c.number}">{c.number}. {esc(c.title)} {_verdict(f.verdict, c.number)}</h2>',
                  f"<p><b>The paper</b> (seed {esc(c.seed)}):</p>", f"<blockquote>{esc(c.paper)}</blockquote>",
                  f"<p><b>advlab</b>: {esc(f.summary)}.</p>"]
        if f.ours:
            parts += ["<ul>", *(f"<li>{esc(line)}</li>" for line in f.ours), "</ul>"]
        parts += _table(f.table, f"table-{c.number}")
        if f.test:
            parts.append(f"<p><b>Test</b>: {esc(f.test)}.</p>")
        for caption, path in f.figures:
            parts.append(f'<figure><img src="{esc(Path(path).name)}" alt="{esc(caption)}">'
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    runs = store.query("SELECT id, code_revision, machine, versions, executor FROM runs ORDER BY id DESC LIMIT 1")
    if runs:
        r = runs[0]
        versions = ", ".join(f"{k} {v}" for k, v in json.loads(r["versions"] or "{}").items())
        parts += ["<h2>Provenance</h2>",
                  f"<p>Last run {r['id']} of the store: code {esc(str(r['code_revision']))}, executor "
                  f"{esc(str(r['executor']))}, {esc(versions)}; machine {esc(str(r['machine']))}.</p>"]
    parts += ["</main>", "</body>", "</html>", ""]
    page = out / "index.html"
    atomic_write_text(page, "\n".join(parts))
    return page


__all__ = ["CLAIMS", "Outcome", "reproduce", "schedule", "write_page"]
