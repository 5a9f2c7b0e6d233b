"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a part.

Every file advlab writes for a user (reports, checkpoints, resumable state) goes through here.
The data is written to a temporary file in the same folder, flushed to disk, given ordinary
permissions (0644 less the umask; ``mkstemp`` alone would leave 0600, so nobody else could read a
shared checkpoint) and moved over the target with :func:`os.replace`. A temporary file left by a
crash is named ``.<name>.<random>.tmp``; :func:`clean_orphans` removes such files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give a new file (0644 under umask 022)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then move it onto ``path`` atomically."""
    path = Path(path)
    _remove_dead_temps(path.parent, path.name)  # what a writer killed mid-write left beside it
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_dead_temps(directory: Path, name: str | None = None) -> list[Path]:
    """Temporary files of :func:`atomic_write` (``.<name>.<pid>.<random>.tmp``) whose writer is no
    longer running: a kill mid-write leaves them. A live writer's file is never touched."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    prefix = f".{name}." if name is not None else "."
    for p in directory.iterdir():
        if not (p.name.startswith(prefix) and p.name.endswith(TMP_SUFFIX) and p.is_file()):
            continue
        parts = p.name.split(".")  # ["", <name parts...>, <pid>, <random>, "tmp"]
        pid_text = parts[-3] if len(parts) >= 4 else ""
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def clean_orphans(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files crashed :func:`atomic_write` calls left in ``directory`` (those
    of writers still running are kept)."""
    return _remove_dead_temps(Path(directory))


# -- several files as one unit ---------------------------------------------------------------------

COMMIT_FILE = ".commit"
PENDING = ".pending"


def _pending(directory: Path, name: str) -> Path:
    return directory / f".{name}{PENDING}"


def _committed_names(directory: Path) -> list[str]:
    """The files a commit marker names; each must be a plain name in ``directory`` (the marker is
    a file on disk like any other: ``../x`` would make recovery move a file out of the folder)."""
    marker = directory / COMMIT_FILE
    try:
        names = [n for n in marker.read_text(encoding="utf-8").splitlines() if n]
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise ValueError(f"{marker} is not a commit marker advlab wrote (not UTF-8 text); remove it") from None
    bad = [n for n in names if n in (".", "..") or Path(n).name != n or "\x00" in n]
    if bad:
        raise ValueError(f"{marker} names {bad!r}, which are not files of its folder; remove it")
    return names


def recover_group(directory: str | os.PathLike[str]) -> None:
    """Finish or undo an interrupted :func:`atomic_write_group` in ``directory``: a committed group
    (its marker exists) is rolled forward, an uncommitted one is discarded."""
    directory = Path(directory)
    names = _committed_names(directory)
    for name in names:
        pending = _pending(directory, name)
        if pending.exists():
            os.replace(pending, directory / name)
    (directory / COMMIT_FILE).unlink(missing_ok=True)
    if directory.is_dir():
        for p in directory.glob(f".*{PENDING}"):
            p.unlink(missing_ok=True)
    clean_orphans(directory)


def atomic_write_group(directory: str | os.PathLike[str], writers: dict[str, Callable[[str], None]]) -> None:
    """Write several files of ``directory`` as one unit: a crash at any moment leaves the old set
    or the new set (as :func:`committed_path` reads it), never a mix.

    Each file is first written completely beside its target (``.<name>.pending``, fsynced, 0644);
    then a marker ``.commit`` naming them is written atomically: that is the commit. The pending
    files are then moved over their targets and the marker removed. A reader that finds the marker
    takes the pending files where they still exist; the next writer rolls a committed group
    forward and discards an uncommitted one.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    recover_group(directory)
    for name, write in writers.items():
        atomic_write(_pending(directory, name), write)
    atomic_write_text(directory / COMMIT_FILE, "\n".join(writers) + "\n")
    for name in writers:
        os.replace(_pending(directory, name), directory / name)
    (directory / COMMIT_FILE).unlink(missing_ok=True)


def committed_path(directory: str | os.PathLike[str], name: str) -> Path:
    """Where the current version of ``name`` is: its pending file when a committed group write was
    interrupted before moving it into place, else ``directory/name``. Reading never writes."""
    directory = Path(directory)
    if name in _committed_names(directory):
        pending = _pending(directory, name)
        if pending.exists():
            return pending
    return directory / name


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse an untrusted JSON file; any defect (bad syntax, bad encoding, an integer too long for
    Python to convert, nesting deep enough to exhaust the parser's recursion) is a ``ValueError``
    naming ``what`` and the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int() of > 4300 digits
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{what} {path} is nested too deeply to be a valid file") from None
