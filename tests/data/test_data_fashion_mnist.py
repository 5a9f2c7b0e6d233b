"""The real Fashion-MNIST files from Debian's dataset-fashion-mnist, and the checksum constants."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path

import pytest
import torch

import advlab.data.download as download_mod
from advlab.data import load_dataset
from advlab.data.mnist import FASHION_MNIST, IDX_DATASETS

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not (DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"{DEBIAN_DIR} absent (sudo apt-get install dataset-fashion-mnist)",
)

# Original gzip mtimes of Zalando's files. Debian's strip-nondeterminism rewrote the gzip
# header (dropped FNAME, set mtime to 2020-06-05); the deflate stream and trailer are untouched.
ORIGINAL_MTIME = {"train": 1504176606, "t10k": 1504176627}


def _restore_canonical_gzip(debian_file: Path) -> bytes:
    data = debian_file.read_bytes()
    assert data[:4] == b"\x1f\x8b\x08\x00", "expected a deflate gzip member without FNAME"
    mtime = ORIGINAL_MTIME[debian_file.name.split("-")[0]]
    name = debian_file.name.removesuffix(".gz").encode() + b"\x00"
    return b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + data[8:10] + name + data[10:]


@needs_debian
@pytest.mark.parametrize("remote", FASHION_MNIST.train + FASHION_MNIST.test, ids=lambda r: r.name)
def test_checksum_constants_match_debian_files_with_restored_header(remote) -> None:
    """The constants are the canonical downloads' digests: Zalando's MD5 and the TFDS SHA-256."""
    canonical = _restore_canonical_gzip(DEBIAN_DIR / remote.name)
    assert len(canonical) == remote.size
    assert hashlib.md5(canonical).hexdigest() == remote.md5
    assert hashlib.sha256(canonical).hexdigest() == remote.sha256


@needs_debian
def test_test_split_from_debian() -> None:
    ds = load_dataset("fashion-mnist", split="test")
    assert len(ds) == 10000
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64
    assert torch.equal(torch.bincount(ds.y, minlength=10), torch.full((10,), 1000))
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert int(ds.y[0]) == 9  # the first test image is an ankle boot
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert "dataset-fashion-mnist" in ds.source and str(DEBIAN_DIR) in ds.source


@needs_debian
def test_train_split_from_debian() -> None:
    ds = load_dataset("fashion-mnist", split="train")
    assert ds.x.shape == (60000, 1, 28, 28)
    assert torch.equal(torch.bincount(ds.y, minlength=10), torch.full((10,), 6000))
    assert int(ds.y[0]) == 9


@needs_debian
def test_download_with_the_real_constants_from_a_local_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """The production spec, only its base URL moved to a file:// mirror of the canonical files."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for remote in FASHION_MNIST.test:
        (mirror / remote.name).write_bytes(_restore_canonical_gzip(DEBIAN_DIR / remote.name))
    spec = dataclasses.replace(FASHION_MNIST, base_url=mirror.as_uri() + "/", system_dirs=())
    monkeypatch.setitem(IDX_DATASETS, "fashion-mnist", spec)
    fetched: list[str] = []
    original = download_mod._open_url

    def counting(url: str, *, timeout: float):
        fetched.append(url)
        return original(url, timeout=timeout)

    monkeypatch.setattr(download_mod, "_open_url", counting)
    downloaded = load_dataset("fashion-mnist", split="test", download=True)
    assert len(fetched) == 2 and "sha256 verified" in downloaded.source
    debian = load_dataset("fashion-mnist", split="test", root=DEBIAN_DIR)
    assert torch.equal(downloaded.x, debian.x) and torch.equal(downloaded.y, debian.y)
    assert sorted(p.name for p in (isolated_env / "fashion-mnist").iterdir()) == sorted(
        r.name for r in FASHION_MNIST.test
    )
