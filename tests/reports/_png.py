"""PNG checks shared by the report tests (imported as a plain module)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, *, width: int, height: int, min_bytes: int = 5_000) -> None:
    """A valid PNG of the given pixel size, with more than blank-page content."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (width, height)
        colors = im.convert("L").getcolors(maxcolors=1 << 16)
        assert colors is None or len(colors) > 16  # not a blank canvas
