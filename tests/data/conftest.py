"""Fixtures for advlab.data: an isolated environment, a no-network guard, synthetic IDX files."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import advlab.data.download as download_mod
from advlab.data.download import RemoteFile
from advlab.data.mnist import FASHION_MNIST, IdxDatasetSpec

from _data_helpers import FILES, make_split, write_split_files


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No user data dirs, a private cache, and a default opener that refuses the network."""
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    cache = tmp_path / "advlab-cache"
    monkeypatch.setenv("ADVLAB_CACHE", str(cache))

    def local_only(url: str, *, timeout: float):
        if urllib.parse.urlsplit(url).scheme != "file":
            raise AssertionError(f"a test tried to reach the network: {url}")
        return urllib.request.urlopen(url, timeout=timeout)

    monkeypatch.setattr(download_mod, "_open_url", local_only)
    return cache


@dataclasses.dataclass
class FakeServer:
    """A directory served through file:// URLs, with a log of what was fetched."""

    directory: Path
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images, labels)
    fetched: list[str]

    @property
    def base_url(self) -> str:
        return self.directory.as_uri() + "/"

    def remote(self, name: str) -> RemoteFile:
        data = (self.directory / name).read_bytes()
        return RemoteFile(name, len(data), sha256=hashlib.sha256(data).hexdigest(),
                          md5=hashlib.md5(data).hexdigest())

    def spec(self, **changes) -> IdxDatasetSpec:
        """Fashion-MNIST pointed at this server, with these files' checksums, no system dir."""
        fields = dict(
            base_url=self.base_url,
            train=tuple(self.remote(n) for n in FILES["train"]),
            test=tuple(self.remote(n) for n in FILES["test"]),
            system_dirs=(),
        )
        fields.update(changes)
        return dataclasses.replace(FASHION_MNIST, **fields)


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    arrays = {"train": make_split(30, seed=1), "test": make_split(12, seed=2)}
    directory = tmp_path / "server"
    write_split_files(directory, arrays)
    server = FakeServer(directory, arrays, fetched=[])
    original = download_mod._open_url

    def counting(url: str, *, timeout: float):
        server.fetched.append(url)
        return original(url, timeout=timeout)

    monkeypatch.setattr(download_mod, "_open_url", counting)
    return server


@pytest.fixture
def use_spec(monkeypatch: pytest.MonkeyPatch) -> Callable[[IdxDatasetSpec], None]:
    """Install a spec in the registry under its name for the duration of a test."""
    from advlab.data.mnist import IDX_DATASETS

    def install(spec: IdxDatasetSpec) -> None:
        monkeypatch.setitem(IDX_DATASETS, spec.name, spec)

    return install
