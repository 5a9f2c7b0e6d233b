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
import math
import os
import struct
import zlib
from pathlib import Path

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


def _read_bytes(path: Path) -> bytes:
    with path.open("rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise IdxFormatError(f"{path}: gzip stream is truncated ({exc}); re-download the file") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IdxFormatError(f"{path}: corrupt gzip data ({exc}); re-download the file") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

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
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxFormatError(f"{path}: {len(data)} bytes is too short for an IDX header (4 bytes)")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(
            f"{path}: not an IDX file (magic number starts with {data[:2].hex()}, expected 0000)"
        )
    if code not in _CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02x}" for c in _CODE_TO_DTYPE)
        raise IdxFormatError(f"{path}: unknown IDX dtype code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise IdxFormatError(f"{path}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, file has {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _CODE_TO_DTYPE[code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{path}: {problem}: header says {dims} of {dtype.name} = {expected} data bytes, "
            f"found {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_size)
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
