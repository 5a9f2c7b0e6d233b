"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a part.

Every file advlab writes for a user (reports, checkpoints, resumable state) goes through here.
The data is written to a temporary file in the same folder, flushed to disk, given ordinary
permissions (0644 less the umask; ``mkstemp`` alone would leave 0600, so nobody else could read a
shared checkpoint) and moved over the target with :func:`os.replace`. A temporary file left by a
crash is named ``.<name>.<random>.tmp``; :func:`clean_orphans` removes such files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
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


def clean_orphans(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a crashed :func:`atomic_write` left in ``directory``."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
