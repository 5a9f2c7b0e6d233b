"""The one way evaluation results are written as JSON: two-space indent, a final newline on disk,
and an atomic write (see :mod:`advlab._io`)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from advlab._io import atomic_write_text


def dump_json(data: Any, path: str | os.PathLike[str] | None = None, *,
              default: Callable[[Any], Any] | None = None) -> str:
    """``json.dumps(data, indent=2, default=default)``; also written to ``path`` (with a final
    newline, atomically) when one is given. Returns the text without the newline."""
    text = json.dumps(data, indent=2, default=default)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return text
