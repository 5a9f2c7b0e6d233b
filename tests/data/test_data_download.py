"""Locating, downloading and caching MNIST-style files, served from a local directory."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.data import ChecksumError, DatasetNotFoundError, DownloadError, load_dataset
from advlab.data.download import RemoteFile, default_cache_dir, download_file
from advlab.data.mnist import FASHION_MNIST, MNIST

from _data_helpers import FILES, make_split, write_split_files


def _expected_x(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).unsqueeze(1).float() / 255


def _files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_then_cache(fake_server, use_spec, isolated_env: Path) -> None:
    use_spec(fake_server.spec())
    ds = load_dataset("fashion-mnist", split="test", download=True)
    images, labels = fake_server.arrays["test"]
    assert torch.equal(ds.x, _expected_x(images))
    assert torch.equal(ds.y, torch.from_numpy(labels).long())
    assert "downloaded from" in ds.source and "sha256 verified" in ds.source
    # only the test split was fetched, straight into the cache, with no temp files left
    assert fake_server.fetched == [fake_server.base_url + name for name in FILES["test"]]
    assert _files_in(isolated_env / "fashion-mnist") == sorted(FILES["test"])

    again = load_dataset("fashion-mnist", split="test")  # no download flag needed now
    assert len(fake_server.fetched) == 2
    assert torch.equal(again.x, ds.x)
    assert "advlab cache, sha256 verified" in again.source

    load_dataset("fashion-mnist", split="test", download=True)
    assert len(fake_server.fetched) == 2  # cached: nothing fetched


def test_checksum_mismatch_raises_and_leaves_nothing(fake_server, use_spec, isolated_env: Path) -> None:
    images, labels = fake_server.spec().test
    bad = dataclasses.replace(images, sha256="0" * 64)
    use_spec(fake_server.spec(test=(bad, labels)))
    expected = r"SHA-256 [0-9a-f]{64} differs from the published 0{64}.*Nothing was saved"
    with pytest.raises(ChecksumError, match=expected):
        load_dataset("fashion-mnist", split="test", download=True)
    assert _files_in(isolated_env / "fashion-mnist") == []


def test_size_mismatch_raises_and_leaves_nothing(fake_server, use_spec, isolated_env: Path) -> None:
    images, labels = fake_server.spec().test
    use_spec(fake_server.spec(test=(images, dataclasses.replace(labels, size=labels.size + 1))))
    with pytest.raises(ChecksumError, match=rf"got {labels.size} bytes, expected {labels.size + 1}"):
        load_dataset("fashion-mnist", split="test", download=True)
    # the images file verified and stays; the bad labels file left no trace
    assert _files_in(isolated_env / "fashion-mnist") == [FILES["test"][0]]


def test_tampered_cache_file_is_rejected(fake_server, use_spec, isolated_env: Path) -> None:
    use_spec(fake_server.spec())
    load_dataset("fashion-mnist", split="test", download=True)
    cached = isolated_env / "fashion-mnist" / FILES["test"][1]
    data = bytearray(cached.read_bytes())
    data[-5] ^= 1
    cached.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="delete the file"):
        load_dataset("fashion-mnist", split="test")


def test_network_failure_is_a_download_error(fake_server, use_spec, isolated_env: Path, monkeypatch) -> None:
    import advlab.data.download as download_mod

    def failing(url: str, *, timeout: float):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(download_mod, "_open_url", failing)
    use_spec(fake_server.spec())
    with pytest.raises(DownloadError, match="Could not download .*connection refused"):
        load_dataset("fashion-mnist", split="train", download=True)
    assert _files_in(isolated_env / "fashion-mnist") == []


def test_missing_remote_file_is_a_download_error(fake_server, use_spec, isolated_env: Path) -> None:
    use_spec(fake_server.spec())
    (fake_server.directory / FILES["train"][0]).unlink()  # the server lost a file
    with pytest.raises(DownloadError, match=FILES["train"][0]):
        load_dataset("fashion-mnist", split="train", download=True)
    assert [p for p in _files_in(isolated_env / "fashion-mnist") if p.endswith(".part")] == []


def test_download_file_with_injected_opener(tmp_path: Path) -> None:
    payload = b"hello advlab" * 100
    expected = RemoteFile("f.bin", len(payload), hashlib.sha256(payload).hexdigest())
    calls = []

    def opener(url: str, *, timeout: float) -> io.BytesIO:
        calls.append((url, timeout))
        return io.BytesIO(payload)

    out = download_file("https://example.invalid/f.bin", tmp_path / "sub" / "f.bin",
                        expected=expected, opener=opener, timeout=5.0, progress=False)
    assert out.read_bytes() == payload
    assert calls == [("https://example.invalid/f.bin", 5.0)]
    assert _files_in(tmp_path / "sub") == ["f.bin"]


def test_not_found_message_lists_places_and_fixes(tmp_path: Path, monkeypatch, use_spec, isolated_env: Path) -> None:
    system_dir = tmp_path / "usr-share-datasets-fashion-mnist"
    use_spec(dataclasses.replace(FASHION_MNIST, system_dirs=(system_dir,)))
    env_dir = tmp_path / "env-data"
    monkeypatch.setenv("ADVLAB_DATA", str(env_dir))
    root = tmp_path / "my-root"
    root.mkdir()
    write_split_files(root, {"test": make_split(3, seed=0)})
    (root / FILES["test"][1]).unlink()  # partial copy: labels missing

    # #11: a folder the user names is the only place searched (an empty --data-dir used to fall
    # through silently to another copy of the data)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", split="test", root=root)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"{root} (root argument): missing t10k-labels-idx1-ubyte.gz" in message
    assert str(env_dir) not in message and str(system_dir) not in message
    assert "root=DIR" in message and "--data-dir" in message

    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", split="test")
    message = str(info.value)
    assert f"{env_dir / 'fashion-mnist'} ($ADVLAB_DATA): does not exist" in message
    assert f"{system_dir} (Debian package dataset-fashion-mnist)" in message
    assert str(isolated_env / "fashion-mnist") in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message and FASHION_MNIST.base_url in message
    # search order in the message: $ADVLAB_DATA, Debian, cache
    positions = [message.index(s) for s in (str(env_dir), str(system_dir), str(isolated_env))]
    assert positions == sorted(positions)


def test_an_empty_data_dir_does_not_fall_through_to_another_copy(tmp_path, monkeypatch, use_spec, isolated_env):
    env_dir = tmp_path / "env-data"
    write_split_files(env_dir / "fashion-mnist", {"test": make_split(3, seed=0)})
    monkeypatch.setenv("ADVLAB_DATA", str(env_dir))
    use_spec(dataclasses.replace(FASHION_MNIST, system_dirs=()))
    assert len(load_dataset("fashion-mnist", split="test")) == 3   # found through $ADVLAB_DATA
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="root argument"):
        load_dataset("fashion-mnist", split="test", root=empty)


def test_mnist_message_has_no_apt_fix(isolated_env: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", split="train")
    message = str(info.value)
    assert "apt-get" not in message
    assert "train-images-idx3-ubyte.gz" in message and MNIST.base_url in message
    assert "$ADVLAB_DATA is not set" in message and "root argument: not given" in message


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "unzipped"])
def test_user_root_is_checked_for_shape_only(tmp_path: Path, use_spec, caplog, gz: bool) -> None:
    use_spec(dataclasses.replace(FASHION_MNIST, system_dirs=()))
    arrays = {"train": make_split(7, seed=5)}
    write_split_files(tmp_path / "mine", arrays, gz=gz)
    ds = load_dataset("fashion-mnist", split="train", root=tmp_path / "mine")
    assert torch.equal(ds.x, _expected_x(arrays["train"][0]))
    assert "root argument" in ds.source and "sha256" not in ds.source
    assert "has 7 examples; the canonical split has 60000" in caplog.text  # a warning, not an error


def test_root_may_hold_a_dataset_subdirectory(tmp_path: Path, use_spec) -> None:
    use_spec(dataclasses.replace(MNIST, system_dirs=()))
    write_split_files(tmp_path / "data" / "mnist", {"test": make_split(5, seed=1)})
    assert len(load_dataset("mnist", root=tmp_path / "data")) == 5


def test_search_order_root_before_env_before_cache(tmp_path: Path, monkeypatch, use_spec, isolated_env: Path) -> None:
    use_spec(dataclasses.replace(MNIST, system_dirs=()))
    write_split_files(tmp_path / "root", {"test": make_split(2, seed=0)})
    write_split_files(tmp_path / "env" / "mnist", {"test": make_split(3, seed=0)})
    write_split_files(isolated_env / "mnist", {"test": make_split(4, seed=0)}, gz=False)
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", root=tmp_path / "root")) == 2
    assert len(load_dataset("mnist")) == 3
    monkeypatch.delenv("ADVLAB_DATA")
    cached = load_dataset("mnist")  # unzipped copy in the cache: shape-checked, not hashed
    assert len(cached) == 4 and "advlab cache" in cached.source and "sha256" not in cached.source


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"test": make_split(4, seed=0, hw=(27, 28))}, r"shape \(N, 28, 28\)"),
        ({"test": (make_split(4, seed=0)[0], np.arange(5, dtype=np.uint8))}, "4 images but .* 5 labels"),
        ({"test": (make_split(4, seed=0)[0], np.array([0, 1, 2, 10], dtype=np.uint8))}, "label 10 is out of range"),
    ],
    ids=["image-size", "count-mismatch", "label-range"],
)
def test_wrong_files_in_root(tmp_path: Path, use_spec, arrays, message: str) -> None:
    use_spec(dataclasses.replace(FASHION_MNIST, system_dirs=()))
    write_split_files(tmp_path, arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset("fashion-mnist", root=tmp_path)


def test_default_cache_dir_precedence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.setenv("ADVLAB_CACHE", "")
    assert default_cache_dir() == tmp_path / "xdg" / "advlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "advlab"


def test_cache_dir_argument_is_used_for_downloads(fake_server, use_spec, tmp_path: Path) -> None:
    use_spec(fake_server.spec())
    load_dataset("fashion-mnist", split="test", download=True, cache_dir=tmp_path / "elsewhere")
    assert _files_in(tmp_path / "elsewhere" / "fashion-mnist") == sorted(FILES["test"])
