"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

Layout (all integers big-endian)::

    0x00 0x00 <dtype code> <ndim>      magic number
    ndim x uint32                     the size of each dimension
    prod(dims) x itemsize bytes       the data, C order

A file whose first two bytes are the gzip magic (``1f 8b``) is decompressed first,
whatever its name.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["IdxFormatError", "read_idx", "write_idx"]

# dtype code -> big-endian numpy dtype (LeCun's specification).
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_SIZE_TO_CODE: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """The file is not a well-formed IDX file (wrong magic, truncated, trailing bytes...)."""


#: deflate expands one byte into at most 1032 (258 bytes from 2 bits)
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 24


def _read_at_most(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream``, in pieces: one ``read(n)`` of a gzip stream allocates ``n``
    bytes first, whatever the stream holds."""
    parts = []
    while n > 0:
        part = stream.read(min(n, _CHUNK))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    The header is read first; no more data is read (or decompressed) than it declares, plus one
    byte to tell trailing bytes, so a gzip bomb behind a small header costs nothing.

    Args:
        path: the file; gzip is detected from its content, not its name.

    Returns:
        A writable array in native byte order with the file's shape and element type
        (``uint8`` for MNIST images and labels).

    Raises:
        FileNotFoundError: the file does not exist.
        IdxFormatError: bad magic number, unknown dtype code, or a data size that
            does not match the dimensions in the header.
    """
    path = Path(path)
    with path.open("rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return _parse(path, io.BytesIO(raw), capacity=len(raw))
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            return _parse(path, stream, capacity=_MAX_DEFLATE_RATIO * len(raw))
    except EOFError as exc:
        raise IdxFormatError(f"{path}: gzip stream is truncated ({exc}); re-download the file") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IdxFormatError(f"{path}: corrupt gzip data ({exc}); re-download the file") from exc


def _parse(path: Path, stream: BinaryIO, *, capacity: int) -> np.ndarray:
    """The array in ``stream``, which holds at most ``capacity`` bytes of data."""
    head = stream.read(4)
    if len(head) < 4:
        raise IdxFormatError(f"{path}: {len(head)} bytes is too short for an IDX header (4 bytes)")
    zero0, zero1, code, ndim = head[0], head[1], head[2], head[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(
            f"{path}: not an IDX file (magic number starts with {head[:2].hex()}, expected 0000)"
        )
    if code not in _CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02x}" for c in _CODE_TO_DTYPE)
        raise IdxFormatError(f"{path}: unknown IDX dtype code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise IdxFormatError(f"{path}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IdxFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, file has {4 + len(sizes)}"
        )
    dims = struct.unpack(f">{ndim}I", sizes)
    dtype = _CODE_TO_DTYPE[code]
    expected = math.prod(dims) * dtype.itemsize
    data = _read_at_most(stream, min(expected, capacity) + 1)  # one byte more tells trailing bytes
    if len(data) != expected:
        trailing = len(data) > expected
        raise IdxFormatError(
            f"{path}: {'has trailing bytes' if trailing else 'truncated'}: header says {dims} of "
            f"{dtype.name} = {expected} data bytes, found {'more' if trailing else len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims))
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file.

    Args:
        path: destination.
        array: any array of ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or ``float64``.
        compress: gzip the file; by default, when ``path`` ends in ``.gz``.

    Returns:
        The path written.
    """
    path = Path(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _KIND_SIZE_TO_CODE:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _KIND_SIZE_TO_CODE[key]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
