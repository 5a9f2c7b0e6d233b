"""IDX reader/writer: exact byte layout, round trips, and every malformed-file error."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from advlab.data import IdxFormatError, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def test_header_layout_matches_the_specification(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = write_idx(tmp_path / "a.idx", array)
    expected = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes(range(6))
    assert path.read_bytes() == expected


def test_multibyte_values_are_big_endian(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.idx", np.array([1, -2], dtype=np.int32))
    assert path.read_bytes()[:4] == bytes([0, 0, 0x0C, 1])
    assert path.read_bytes()[8:] == struct.pack(">ii", 1, -2)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path: Path, dtype: type, gz: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
    assert path.read_bytes().startswith(b"\x1f\x8b") == gz
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # writable
    assert back.flags.c_contiguous


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=True)
    np.testing.assert_array_equal(read_idx(path), labels)


def _raw(tmp_path: Path) -> bytes:
    return write_idx(tmp_path / "ok.idx", np.arange(24, dtype=np.uint8).reshape(2, 3, 4)).read_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], r"truncated: header says \(2, 3, 4\) of uint8 = 24 data bytes, found 23"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b"\x08\x03" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX dtype code 0x07"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:10], "truncated header: 3 dimensions need 16 bytes"),
        (lambda b: b[:3], "too short"),
    ],
    ids=["truncated-data", "trailing", "magic", "dtype-code", "ndim-0", "truncated-header", "tiny"],
)
def test_malformed_raw_files(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(_raw(tmp_path)))
    with pytest.raises(IdxFormatError, match=message):
        read_idx(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(_raw(tmp_path))
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IdxFormatError, match="gzip stream is truncated"):
        read_idx(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = write_idx(tmp_path / "r.idx", rng.integers(0, 255, 4000, dtype=np.uint8)).read_bytes()
    data = bytearray(gzip.compress(raw))
    data[-8] ^= 0xFF  # CRC32 of the trailer
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError, match="corrupt gzip data"):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.idx")


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="IDX cannot store dtype int64"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.int64))
