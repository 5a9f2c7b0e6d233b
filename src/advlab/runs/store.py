"""The results store: one SQLite file (WAL, transactions, a schema version) and a folder beside it.

Tables:

* ``runs``: one row per ``advlab run`` (spec text, versions, code revision, machine, start/end);
* ``cells``: one row per cell hash (kind, resolved config, status ``done`` / ``failed`` /
  ``running``, error text, seconds, the run that last touched it);
* ``metrics``: the cell's numbers (``name``, ``eps``, ``attack``, ``value``), e.g. robust accuracy;
* ``outcomes``: **per point** (cell, attack, ε, point id in its dataset): clean correct,
  adversarial success, perturbation norm, queries; the worst case per point across attacks and
  across runs is a query over these.

Adversarial examples, trained models and figures are files in ``<store>.files/<cell hash>/``
(safetensors only). A cell's rows are written in one transaction with its status, so a kill at any
moment leaves either the whole cell or none of it; its files are written before that commit, so a
committed cell's files exist. Two processes may write the same store: SQLite's locking serialises
their transactions (``busy_timeout``), and ``INSERT OR REPLACE`` on the cell hash makes a cell
finished twice a cell stored once.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, spec_name TEXT, spec_path TEXT, spec_text TEXT,
    versions TEXT, code_revision TEXT, machine TEXT, executor TEXT,
    started REAL NOT NULL, finished REAL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    hash TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT, config TEXT NOT NULL,
    model TEXT, model_name TEXT, dataset TEXT, norm TEXT,
    status TEXT NOT NULL, error TEXT, seconds REAL, run_id INTEGER, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    cell TEXT NOT NULL, attack TEXT NOT NULL, eps REAL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (cell, attack, eps, name));
CREATE TABLE IF NOT EXISTS outcomes (
    cell TEXT NOT NULL, attack TEXT NOT NULL, eps REAL NOT NULL, point INTEGER NOT NULL,
    clean_correct INTEGER NOT NULL, success INTEGER NOT NULL, norm REAL, queries INTEGER,
    PRIMARY KEY (cell, attack, eps, point));
CREATE INDEX IF NOT EXISTS cells_by_model ON cells (model, dataset, norm, kind);
CREATE TABLE IF NOT EXISTS claims (
    cell TEXT PRIMARY KEY, run_id INTEGER NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    claimed REAL NOT NULL);
"""
# (``claims`` came after schema 1's first release; CREATE ... IF NOT EXISTS adds it to an older
# store, and an older advlab ignores it, so the schema version stays 1)

#: a claim by a process on another host counts as live this long (a process on this host is
#: asked directly whether it still runs)
CLAIM_STALE_S = 12 * 3600.0


class StoreError(ValueError):
    """A store that cannot be used: not SQLite, written by a newer schema, ..."""


@dataclass
class CellResult:
    """What a finished cell stores: metric rows, per-point outcomes and its own files."""

    metrics: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    seconds: float
    summary: dict[str, Any]


class Store:
    """A results store at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.files = self.path.with_name(self.path.name + ".files")
        # one stat, not exists() then is_file(): another run creating the store between the two
        # calls made this one call a fresh file "a directory" (found when two runs started at once)
        try:
            mode: int | None = self.path.stat().st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise StoreError(f"{self.path} is a directory; --store takes a file path, e.g. runs.db")
        if mode is not None:
            with self.path.open("rb") as fh:
                head = fh.read(16)
            if head and head != b"SQLite format 3\x00":
                raise StoreError(f"{self.path} is not an advlab store (not an SQLite file); choose another "
                                 "--store path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self.db.execute("PRAGMA foreign_keys=ON")
            with self.transaction():
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self.db.execute(stmt)
                row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(f"{self.path} was written by a newer advlab (store schema {row[0]}; this "
                                     f"advlab reads up to {SCHEMA_VERSION}); upgrade advlab or use another store")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite store: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- runs ------------------------------------------------------------------------------

    def start_run(self, *, spec_name: str, spec_path: str | None, spec_text: str, executor: str) -> int:
        from advlab import __version__
        from advlab.models.checkpoint import code_revision

        import torch

        versions = {"advlab": __version__, "torch": torch.__version__, "python": platform.python_version()}
        machine = f"{socket.gethostname()} ({platform.machine()}, {os.cpu_count()} CPUs)"
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs (spec_name, spec_path, spec_text, versions, code_revision, machine, executor, "
                "started, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (spec_name, spec_path, spec_text, json.dumps(versions), code_revision(), machine, executor,
                 time.time()))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE runs SET finished = ?, status = ? WHERE id = ?", (time.time(), status, run_id))
            self.db.execute("DELETE FROM claims WHERE run_id = ?", (run_id,))

    # --- claims: two runs on one store share out the cells instead of both running each ------

    def holder(self, cell_hash: str) -> int | None:
        """The run that holds a live claim on ``cell_hash``, or ``None``."""
        held = self.db.execute("SELECT run_id, host, pid, claimed FROM claims WHERE cell = ?",
                               (cell_hash,)).fetchone()
        return int(held[0]) if held is not None and _alive(held, socket.gethostname()) else None

    def claim(self, cell_hash: str, run_id: int) -> tuple[str, int | None]:
        """Take ``cell_hash`` for ``run_id`` before running it.

        Returns ``("run", None)`` when this run should run it (claim taken), ``("done", None)``
        when another run finished it meanwhile, or ``("taken", other_run_id)`` when a live run
        holds it. A claim is live while its process runs (checked directly on this host; on
        another host, for :data:`CLAIM_STALE_S` after it was taken); a dead run's claim (a
        ``kill -9``) is taken over."""
        host, pid = socket.gethostname(), os.getpid()
        with self.transaction():
            row = self.db.execute("SELECT status FROM cells WHERE hash = ?", (cell_hash,)).fetchone()
            if row is not None and row[0] == "done":
                return "done", None
            held = self.db.execute("SELECT run_id, host, pid, claimed FROM claims WHERE cell = ?",
                                   (cell_hash,)).fetchone()
            if held is not None and held[0] != run_id and _alive(held, host):
                return "taken", int(held[0])
            self.db.execute("INSERT OR REPLACE INTO claims (cell, run_id, host, pid, claimed) VALUES (?, ?, ?, ?, ?)",
                            (cell_hash, run_id, host, pid, time.time()))
        return "run", None

    # --- cells -----------------------------------------------------------------------------

    def status(self, hashes: Sequence[str] | None = None) -> dict[str, str]:
        """``{hash: status}`` of the stored cells (all, or those of ``hashes``)."""
        if hashes is None:
            return dict(self.db.execute("SELECT hash, status FROM cells").fetchall())
        wanted, out = list(dict.fromkeys(hashes)), {}
        for i in range(0, len(wanted), 500):  # (a grid's worker asks for a few; SQLite caps the parameters)
            part = wanted[i:i + 500]
            out.update(self.db.execute(f"SELECT hash, status FROM cells WHERE hash IN ({','.join('?' * len(part))})",
                                       part).fetchall())
        return out

    def done(self) -> set[str]:
        return {h for h, s in self.status().items() if s == "done"}

    def cell_dir(self, cell_hash: str) -> Path:
        return self.files / cell_hash

    def record(self, cell: Any, result: CellResult, *, run_id: int | None) -> None:
        """Store a finished cell: its metrics, outcomes and status, in one transaction."""
        model, name, dataset, norm = _index_fields(cell.config)
        with self.transaction():
            for table in ("metrics", "outcomes"):
                self.db.execute(f"DELETE FROM {table} WHERE cell = ?", (cell.hash,))
            self.db.executemany(
                "INSERT INTO metrics (cell, attack, eps, name, value) VALUES (?, ?, ?, ?, ?)",
                [(cell.hash, m["attack"], m.get("eps"), m["name"], _real(m["value"])) for m in result.metrics])
            self.db.executemany(
                "INSERT INTO outcomes (cell, attack, eps, point, clean_correct, success, norm, queries) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(cell.hash, o["attack"], o["eps"], o["point"], int(o["clean_correct"]), int(o["success"]),
                  _real(o.get("norm")), o.get("queries")) for o in result.outcomes])
            self.db.execute(
                "INSERT OR REPLACE INTO cells (hash, kind, label, config, model, model_name, dataset, norm, status, "
                "error, seconds, run_id, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'done', NULL, ?, ?, ?)",
                (cell.hash, cell.kind, cell.label, json.dumps(cell.config, sort_keys=True), model, name, dataset,
                 norm, result.seconds, run_id, time.time()))
            self.db.execute("DELETE FROM claims WHERE cell = ?", (cell.hash,))

    def record_failure(self, cell: Any, error: str, *, seconds: float, run_id: int | None) -> None:
        """A failed cell, with its error; the next run retries it."""
        model, name, dataset, norm = _index_fields(cell.config)
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO cells (hash, kind, label, config, model, model_name, dataset, norm, status, "
                "error, seconds, run_id, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?, ?)",
                (cell.hash, cell.kind, cell.label, json.dumps(cell.config, sort_keys=True), model, name, dataset,
                 norm, error, seconds, run_id, time.time()))
            self.db.execute("DELETE FROM claims WHERE cell = ?", (cell.hash,))

    # --- reading ---------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(sql, params).fetchall()
        finally:
            self.db.row_factory = None


def _alive(held: Sequence[Any], host: str) -> bool:
    """Whether the process that took a claim ``(run_id, host, pid, claimed)`` still runs."""
    _, their_host, pid, claimed = held
    if their_host != host:
        return time.time() - float(claimed) < CLAIM_STALE_S
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    try:  # a killed process its parent has not reaped yet (a zombie) still answers kill(pid, 0)
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _real(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def model_label(ref: Mapping[str, Any]) -> str:
    """How tables name a model reference of a cell config: its name in the spec."""
    return str(ref.get("name") or ref.get("path") or ref.get("factory"))


def model_key(ref: Mapping[str, Any]) -> str:
    """A model's identity across specs and runs: its train cell, its weights' SHA-256, or its
    factory and weights (two specs that call different models "cnn" do not mix)."""
    if ref.get("source") == "trained":
        return f"trained:{ref['cell']}"
    if ref.get("source") == "checkpoint":
        return f"sha256:{ref['sha256'][:16]}"
    if ref.get("source") == "sklearn":  # (once keyed as one "factory:None" for every estimator)
        return f"sklearn:{ref['sha256'][:16]}"
    return f"factory:{ref.get('factory')}@{str(ref.get('weights_sha256', 'own-weights'))[:16]}"


def _index_fields(config: Mapping[str, Any]) -> tuple[str | None, str | None, str | None, str | None]:
    model = config.get("model")
    key = model_key(model) if isinstance(model, Mapping) else None
    name = model_label(model) if isinstance(model, Mapping) else None
    data = config.get("data")
    dataset = data.get("name") if isinstance(data, Mapping) else None
    return key, name, dataset, config.get("norm")
